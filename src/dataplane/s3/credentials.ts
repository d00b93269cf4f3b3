// S3 access keys. Embedded default: one key pair generated at first start,
// kept in DATA_DIR/s3-credentials.json (mode 0600), printed once on stderr.
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { InvalidArgument } from '../errors.js';
import { log } from '../../log.js';
import { writeFileDurableSync } from '../dir-sync.js';

export const CREDENTIALS_FILE = 's3-credentials.json';

export interface AccessKey {
  accessKeyId: string;
  secretAccessKey: string;
}

const KEY_ID_RE = /^[A-Z0-9]{16,128}$/;

function generate(): AccessKey {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  const id = [...randomBytes(16)].map((b) => alphabet[b & 31]).join('');
  return { accessKeyId: `CS${id}`.slice(0, 20), secretAccessKey: randomBytes(30).toString('base64') };
}

/** Loads the key list, creating it (and printing the new key) on first start. */
export function loadCredentials(dataDir: string): AccessKey[] {
  const file = path.join(dataDir, CREDENTIALS_FILE);
  if (!fs.existsSync(file)) {
    const key = generate();
    // Durable before the key is printed (a client configured with it must not
    // meet a new key after a power cut), and created exclusively: two daemons
    // racing on first start must not overwrite each other's key.
    if (writeFileDurableSync(file, JSON.stringify({ keys: [key] }, null, 2) + '\n', 0o600)) {
      process.stderr.write(`couchestor: generated S3 access key (stored in ${file}):\n  AWS_ACCESS_KEY_ID=${key.accessKeyId}\n  AWS_SECRET_ACCESS_KEY=${key.secretAccessKey}\n`);
      log.info('s3: generated access key', { file, accessKeyId: key.accessKeyId });
    }
  }
  const parsed = JSON.parse(fs.readFileSync(file, 'utf8')) as { keys?: AccessKey[] };
  const keys = parsed.keys ?? [];
  if (keys.length === 0) throw new InvalidArgument(`${file}: no keys`);
  for (const k of keys) {
    if (!KEY_ID_RE.test(k.accessKeyId) || typeof k.secretAccessKey !== 'string' || k.secretAccessKey.length < 16) {
      throw new InvalidArgument(`${file}: each key needs an accessKeyId of 16-128 [A-Z0-9] and a secretAccessKey of at least 16 characters`);
    }
  }
  return keys;
}
