import { randomUUID } from 'node:crypto';
import { createWriteStream, type WriteStream } from 'node:fs';
import { unlink } from 'node:fs/promises';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { BadRequestException, HttpException, PayloadTooLargeException } from '@nestjs/common';
import busboy from 'busboy';
import type { Request, Response } from 'express';
import type { UploadedInput } from '../jobs.service';
import { isNoSpace } from '../store/results.store';
import { closeIfUnread } from '../../../config/src';

/** What one multipart submission may hold. */
export interface UploadLimits {
  /** MAX_UPLOAD: the bytes of all files of one submission together (one file included). */
  totalBytes: number;
  /** Files in one submission. */
  files: number;
  /** Text fields in one submission (experiment, params, priority, key, and any others). */
  fields: number;
  /** Bytes of one text field's value: `params` is JSON text, bounded like a JSON body. */
  fieldBytes: number;
}

/** The fixed limits; totalBytes comes from MAX_UPLOAD. */
export const FORM_LIMITS = { files: 100, fields: 20, fieldBytes: 100 * 1024 } as const;

/** The text fields and the stored files of a multipart submission, once it was read whole. */
export interface ReceivedForm {
  fields: Record<string, string>;
  files: UploadedInput[];
}

export interface ReceiveOptions {
  limits: UploadLimits;
  /** Where files are written (DATA_FOLDER/jobs/.uploads: the job folders' filesystem). */
  dir: string;
  /** A new file name in `dir` (ResultsStore.newUploadName: the worker's name and a UUID). */
  newName?: () => string;
  /**
   * Runs once, when the first file part starts, with the fields received so far; throws (or
   * rejects) to refuse the submission. Nothing of any file is written before it resolved.
   */
  beforeFirstFile(fields: Record<string, string>): Promise<void>;
}

/** Room for the fields and the parts' headers beside MAX_UPLOAD in a declared Content-Length. */
const FORM_OVERHEAD = (l: UploadLimits) => l.fields * l.fieldBytes + (l.files + l.fields) * 16_384;

/** A byte count for a message: `64 KiB`, `9.54 MiB`. */
const size = (n: number): string =>
  n >= 1024 ** 3
    ? `${+(n / 1024 ** 3).toFixed(2)} GiB`
    : n >= 1024 ** 2
      ? `${+(n / 1024 ** 2).toFixed(2)} MiB`
      : n >= 1024
        ? `${+(n / 1024).toFixed(2)} KiB`
        : `${n} bytes`;

/**
 * Reads a multipart/form-data submission as it arrives, with busboy (the parser multer uses).
 * Text fields are kept in memory, each at most `fieldBytes`, at most `fields` of them. File
 * parts must come after the fields: at the first one, `beforeFirstFile` checks the submission
 * (experiment, params, free disk); only then is the file written, under `dir`, counting bytes
 * against MAX_UPLOAD. A field after a file is refused (the check would not have seen it).
 *
 * On any refusal (a limit, a failed check, a malformed body) or when the client goes away,
 * reading stops at once, every file written so far is removed before the promise rejects, and
 * the answer closes the connection (the rest of the body is never read). Why this bounds the
 * cost: memory holds at most `fields × fieldBytes` plus the streams' buffers; the disk holds
 * nothing before the check passed, and never more than MAX_UPLOAD per submission.
 */
export function receiveForm(
  req: Request,
  res: Response,
  opts: ReceiveOptions,
): Promise<ReceivedForm> {
  const { limits } = opts;
  const tooLarge = (what: string) =>
    new PayloadTooLargeException(
      `${what} the limit of ${size(limits.totalBytes)} for the files of one job (MAX_UPLOAD)`,
    );
  const declared = Number(req.headers['content-length']);
  if (declared > limits.totalBytes + FORM_OVERHEAD(limits)) {
    closeIfUnread(req, res);
    return Promise.reject(tooLarge(`the upload is ${size(declared)}, over`));
  }
  let parser: busboy.Busboy;
  try {
    parser = busboy({
      headers: req.headers,
      limits: {
        fieldNameSize: 200,
        // busboy reports a limit when it is reached (a field of exactly fieldSize bytes is
        // "truncated"); one more than allowed tells "over the limit" from "exactly at it".
        fieldSize: limits.fieldBytes + 1,
        fields: limits.fields,
        files: limits.files,
        parts: limits.fields + limits.files + 1,
        fileSize: limits.totalBytes + 1,
        headerPairs: 50,
      },
    });
  } catch (err) {
    closeIfUnread(req, res);
    return Promise.reject(new BadRequestException(`multipart body: ${(err as Error).message}`));
  }

  return new Promise<ReceivedForm>((resolve, reject) => {
    const fields: Record<string, string> = Object.create(null) as Record<string, string>;
    const files: UploadedInput[] = [];
    const streams: WriteStream[] = [];
    const writes: Promise<void>[] = [];
    let checked: Promise<void> | undefined;
    let fileSeen = false;
    let total = 0;
    let failed = false;
    let parsed = false;

    const fail = (err: Error) => {
      if (failed) return;
      failed = true;
      req.unpipe(parser);
      req.pause();
      parser.removeAllListeners('file');
      parser.removeAllListeners('field');
      parser.on('error', () => undefined);
      closeIfUnread(req, res);
      // Each file is removed once its stream is closed (a stream still opening its file would
      // create it after an earlier unlink), and before the answer goes out: a refused upload
      // leaves nothing behind.
      // (Waited on 'close' alone: a destroyed stream may also emit an error, which is moot.)
      const closed = streams.map((w) =>
        w.closed
          ? Promise.resolve()
          : new Promise<void>((r) => w.once('close', () => r()).destroy()),
      );
      void Promise.all(closed)
        .then(() => Promise.allSettled(files.map((f) => unlink(f.path))))
        .finally(() => reject(err));
    };
    const limit = (what: string) => () => fail(new PayloadTooLargeException(what));

    parser.on('field', (name, value, info) => {
      if (failed) return;
      if (info.nameTruncated)
        return fail(new BadRequestException('a field name is over 200 characters'));
      if (info.valueTruncated) {
        return fail(
          new PayloadTooLargeException(
            `field '${name.slice(0, 100)}' is over the limit of ${size(limits.fieldBytes)} per field; send data as files`,
          ),
        );
      }
      if (fileSeen) {
        return fail(
          new BadRequestException(
            `field '${name.slice(0, 100)}' came after a file: send the fields (experiment, params, ` +
              `priority, key) before the files (curl -F keeps the order given)`,
          ),
        );
      }
      if (name in fields)
        return fail(new BadRequestException(`field '${name.slice(0, 100)}' is given twice`));
      fields[name] = value;
    });

    parser.on('file', (_name, stream, info) => {
      if (failed) return void stream.resume();
      fileSeen = true;
      // The first file waits for the check; busboy reads no further meanwhile (backpressure).
      try {
        checked ??= opts.beforeFirstFile({ ...fields });
      } catch (err) {
        stream.resume();
        return fail(err as Error);
      }
      const dest = path.join(opts.dir, opts.newName?.() ?? randomUUID());
      const write = checked.then(async () => {
        if (failed) return void stream.resume();
        // 'wx': a fresh file of our own name, never one that exists (nor a link planted there).
        const out = createWriteStream(dest, { flags: 'wx', mode: 0o600 });
        // Errors reach pipeline(); one a destroyed stream raises later must not go unheard.
        out.on('error', () => undefined);
        streams.push(out);
        files.push({ originalname: info.filename ?? 'upload', path: dest });
        stream.on('data', (chunk: Buffer) => {
          total += chunk.length;
          if (total > limits.totalBytes) fail(tooLarge('the files are larger than'));
        });
        await pipeline(stream, out);
      });
      writes.push(
        write.catch((err: unknown) => {
          if (isNoSpace(err)) {
            err = new HttpException(
              {
                statusCode: 507,
                error: 'Insufficient Storage',
                message: `disk full: no space left for the upload in ${opts.dir}; free some space and submit again`,
              },
              507,
            );
          }
          fail(err as Error);
        }),
      );
    });

    parser.on('fieldsLimit', limit(`more than ${limits.fields} fields in one submission`));
    parser.on('filesLimit', limit(`more than ${limits.files} files in one submission`));
    parser.on(
      'partsLimit',
      limit(`more than ${limits.fields + limits.files} parts in one submission`),
    );
    parser.on('error', (err) =>
      fail(new BadRequestException(`malformed multipart body: ${(err as Error).message}`)),
    );
    parser.on('close', () => {
      parsed = true;
      void Promise.all(writes).then(() => {
        if (!failed) resolve({ fields: { ...fields }, files });
      });
    });
    // A client that goes away mid-upload: nothing is answered, nothing is kept.
    req.on('close', () => {
      if (!parsed && !req.readableEnded) fail(new BadRequestException('the upload was cut off'));
    });
    req.pipe(parser);
  });
}
