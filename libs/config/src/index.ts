export * from './env';
export * from './env-file';
export * from './parse';
export * from './logger';
export * from './nest-logger';
export * from './daemon';
export * from './deadline';
export * from './redact';
