import { expect } from 'vitest';
import { ConfigError, loadBootConfig } from '../../src/config/env.js';

/** The problems loadBootConfig names for `env` (it must refuse it); `readFile` stands in for the file system. */
export function configProblems(env: Record<string, string>, readFile?: (file: string) => string): string[] {
  try {
    loadBootConfig(env, readFile);
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError);
    return (error as ConfigError).problems;
  }
  throw new Error('expected a ConfigError');
}
