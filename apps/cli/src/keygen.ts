import { generateKeyFile } from '../../../libs/tunnel/src';

/** `gpu-sidecar keygen FILE`: prints the key's fingerprint (never the key) and returns an exit code. */
export async function keygen(file: string): Promise<number> {
  try {
    const fingerprint = await generateKeyFile(file);
    process.stdout.write(`wrote ${file} (mode 0600), fingerprint ${fingerprint}\n`);
    process.stdout.write(
      'copy it to the other host over a secure channel (scp), keeping mode 0600\n',
    );
    return 0;
  } catch (err) {
    process.stderr.write(`gpu-sidecar keygen: ${(err as Error).message}\n`);
    return 1;
  }
}
