export * from './registry';
export * from './tunnel';
export * from './names';
