// What the S3 subresources CoucheStor has no feature behind answer: bucket
// configurations that are never configured (their "none" answer, their DELETE,
// the PUT refused by name) and the ones refused outright, each decided against
// MinIO and S3 (test/s3-subresources.test.ts). The owner-only ACL lives here too.
import { S3Error } from './errors.js';
import { S3_NS, XML_HEADER, child, children, tag, type XmlElement } from './xml.js';

export interface BucketConfig {
  /** GET with nothing configured: a 404 with S3's code for it, or the empty document S3 returns. */
  none: { code: string; message: string } | { xml: string };
  /** S3 has a DELETE for it (204: nothing to remove); else DELETE is 405, never a bucket delete. */
  deletable: boolean;
  /** Named in the PUT refusal: "CoucheStor does not support <feature>". */
  feature: string;
  /** Root element of a PUT body that may only restate the default (e.g. logging off), and the test that it does. */
  acceptsDefault?: { root: string; isDefault: (root: XmlElement) => boolean };
}

const empty = (root: string) => ({ xml: `${XML_HEADER}<${root} xmlns="${S3_NS}"></${root}>` });
const statusIs = (...allowed: (string | undefined)[]) => (root: XmlElement) => allowed.includes(child(root, 'Status')?.text.trim());

/** Keyed by query parameter. GET answers match MinIO's except where noted (MinIO 501s ownershipControls/publicAccessBlock; S3 404s them). */
export const BUCKET_CONFIGS: Readonly<Record<string, BucketConfig>> = {
  policy: { none: { code: 'NoSuchBucketPolicy', message: 'The bucket policy does not exist' }, deletable: true, feature: 'bucket policies' },
  cors: { none: { code: 'NoSuchCORSConfiguration', message: 'The CORS configuration does not exist' }, deletable: true, feature: 'CORS configuration' },
  lifecycle: { none: { code: 'NoSuchLifecycleConfiguration', message: 'The lifecycle configuration does not exist' }, deletable: true, feature: 'lifecycle configuration' },
  encryption: { none: { code: 'ServerSideEncryptionConfigurationNotFoundError', message: 'The server side encryption configuration was not found' }, deletable: true, feature: 'bucket encryption configuration' },
  website: { none: { code: 'NoSuchWebsiteConfiguration', message: 'The specified bucket does not have a website configuration' }, deletable: true, feature: 'static website hosting' },
  replication: { none: { code: 'ReplicationConfigurationNotFoundError', message: 'The replication configuration was not found' }, deletable: true, feature: 'bucket replication' },
  'object-lock': { none: { code: 'ObjectLockConfigurationNotFoundError', message: 'Object Lock configuration does not exist for this bucket' }, deletable: false, feature: 'object lock' },
  ownershipControls: { none: { code: 'OwnershipControlsNotFoundError', message: 'The bucket ownership controls were not found' }, deletable: true, feature: 'object ownership controls' },
  publicAccessBlock: { none: { code: 'NoSuchPublicAccessBlockConfiguration', message: 'The public access block configuration was not found' }, deletable: true, feature: 'public access block configuration' },
  notification: {
    none: empty('NotificationConfiguration'),
    deletable: false,
    feature: 'bucket event notifications',
    acceptsDefault: { root: 'NotificationConfiguration', isDefault: (root) => root.children.length === 0 },
  },
  logging: {
    none: empty('BucketLoggingStatus'),
    deletable: false,
    feature: 'server access logging',
    acceptsDefault: { root: 'BucketLoggingStatus', isDefault: (root) => child(root, 'LoggingEnabled') === undefined },
  },
  requestPayment: {
    none: { xml: `${XML_HEADER}<RequestPaymentConfiguration xmlns="${S3_NS}"><Payer>BucketOwner</Payer></RequestPaymentConfiguration>` },
    deletable: false,
    feature: 'requester pays',
    acceptsDefault: { root: 'RequestPaymentConfiguration', isDefault: (root) => child(root, 'Payer')?.text.trim() === 'BucketOwner' },
  },
  accelerate: {
    none: empty('AccelerateConfiguration'),
    deletable: false,
    feature: 'transfer acceleration',
    acceptsDefault: { root: 'AccelerateConfiguration', isDefault: statusIs(undefined, 'Suspended') },
  },
  versioning: {
    none: empty('VersioningConfiguration'),
    deletable: false,
    feature: 'object versioning',
    acceptsDefault: { root: 'VersioningConfiguration', isDefault: (root) => statusIs(undefined, 'Suspended')(root) && child(root, 'MfaDelete')?.text.trim() !== 'Enabled' },
  },
};

export const refuseConfig = (cfg: BucketConfig) => new S3Error('NotImplemented', 501, `CoucheStor does not support ${cfg.feature}.`);

/** Subresources with no answer but a refusal (S3 code as MinIO answers them), by query parameter. */
export const UNSUPPORTED: Readonly<Record<string, () => S3Error>> = {
  analytics: () => new S3Error('NotImplemented', 501, 'Bucket analytics configurations are not supported by CoucheStor.'),
  inventory: () => new S3Error('NotImplemented', 501, 'Bucket inventory configurations are not supported by CoucheStor.'),
  metrics: () => new S3Error('NotImplemented', 501, 'Bucket metrics configurations are not supported by CoucheStor.'),
  'intelligent-tiering': () => new S3Error('NotImplemented', 501, 'Intelligent-Tiering configurations are not supported by CoucheStor (it tiers by its own storage policies).'),
  torrent: () => new S3Error('NotImplemented', 501, 'BitTorrent downloads are not supported by CoucheStor.'),
  select: () => new S3Error('NotImplemented', 501, 'S3 Select (SelectObjectContent) is not supported by CoucheStor.'),
  // GetObjectAttributes is a GET on an object (server.ts); any other method, or a bucket, is not a resource it has.
  attributes: () => new S3Error('MethodNotAllowed', 405, 'The specified method is not allowed against this resource: ?attributes is GetObjectAttributes, a GET on an object.'),
  // S3 and MinIO answer these for a bucket without object lock, which is every CoucheStor bucket.
  retention: () => new S3Error('InvalidRequest', 400, 'Bucket is missing ObjectLockConfiguration (object lock is not supported by CoucheStor).'),
  'legal-hold': () => new S3Error('InvalidRequest', 400, 'Bucket is missing ObjectLockConfiguration (object lock is not supported by CoucheStor).'),
  // Nothing is ever archived, so there is nothing to restore (S3 and MinIO: 403 InvalidObjectState).
  restore: () => new S3Error('InvalidObjectState', 403, 'The operation is not valid for the current state of the object: objects are never archived, so restore is not supported by CoucheStor.'),
};

// ---- ACL -----------------------------------------------------------------

/**
 * Canned ACLs that mean "only the owner": CoucheStor has one owner per
 * daemon, so the bucket owner is every object's owner too.
 */
const OWNER_ONLY_CANNED = new Set(['private', 'bucket-owner-full-control', 'bucket-owner-read']);
const ACL_REFUSAL = 'The bucket does not allow ACLs: CoucheStor supports only the owner FULL_CONTROL access control policy (canned ACL private); grants to other users or groups are not supported.';
/**
 * An ACL granting anyone but the owner: 400 AccessControlListNotSupported,
 * what S3 answers on a bucket with ACLs disabled (ObjectOwnership
 * BucketOwnerEnforced, the default since 2023), not a 501 that s3cmd, the
 * SDKs and the aws cli take for a server fault and retry (s3cmd put -P: ~45 s).
 */
const aclNotSupported = (message: string) => new S3Error('AccessControlListNotSupported', 400, message);

/** The one ACL there is: the owner with FULL_CONTROL (what MinIO answers, with the owner named). */
export function aclXml(ownerId: string, displayName: string): string {
  const owner = `${tag('ID', ownerId)}${tag('DisplayName', displayName)}`;
  return `${XML_HEADER}<AccessControlPolicy xmlns="${S3_NS}"><Owner>${owner}</Owner><AccessControlList><Grant><Grantee xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:type="CanonicalUser">${owner}</Grantee><Permission>FULL_CONTROL</Permission></Grant></AccessControlList></AccessControlPolicy>`;
}

/** x-amz-acl / x-amz-grant-* on a PUT (object, bucket, ?acl): accepted only when they mean owner-only. */
export function checkAclHeaders(headers: Readonly<Record<string, string | string[] | undefined>>): void {
  const canned = headers['x-amz-acl'];
  if (canned !== undefined && !OWNER_ONLY_CANNED.has(String(canned).trim())) {
    throw aclNotSupported(`The bucket does not allow ACLs: the canned ACL ${String(canned)} is not supported by CoucheStor; only private (owner FULL_CONTROL) is.`);
  }
  for (const h of Object.keys(headers)) if (h.startsWith('x-amz-grant-')) throw aclNotSupported(ACL_REFUSAL);
}

/** An AccessControlPolicy body: accepted when every grant is FULL_CONTROL to the owner (PutBucketAcl round-trips GetBucketAcl). */
export function checkAclBody(root: XmlElement, ownerId: string): void {
  const list = child(root, 'AccessControlList');
  const grants = list === undefined ? [] : children(list, 'Grant');
  if (grants.length === 0) throw new S3Error('MalformedACLError', 400, 'The XML you provided was not well-formed or did not validate against our published schema.');
  for (const g of grants) {
    const grantee = child(g, 'Grantee');
    const id = grantee === undefined ? undefined : child(grantee, 'ID')?.text.trim();
    if (child(g, 'Permission')?.text.trim() !== 'FULL_CONTROL' || id !== ownerId) throw aclNotSupported(ACL_REFUSAL);
  }
}
