export * from './registry';
export * from './tunnel';
