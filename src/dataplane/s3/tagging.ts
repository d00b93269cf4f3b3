// S3 tag sets at the protocol edge: parsing (the Tagging XML body and the
// x-amz-tagging header), S3's limits and character rules, and the XML answer.
// The store only keeps the validated [key, value] pairs.
import type { Tag } from '../objects/store.js';
import { S3Error } from './errors.js';
import { S3_NS, XML_HEADER, child, children, tag, type XmlElement } from './xml.js';

export const MAX_OBJECT_TAGS = 10;
export const MAX_BUCKET_TAGS = 50;
export const MAX_TAG_KEY_CHARS = 128;
export const MAX_TAG_VALUE_CHARS = 256;
/** S3's tag alphabet: Unicode letters, digits and spaces, and _ . : / = + - @ (MinIO accepts the ASCII part of it). */
const TAG_CHARS_RE = /^[\p{L}\p{Z}\p{N}_.:/=+\-@]*$/u;

export type TagOwner = 'object' | 'bucket';

const invalidTag = (message: string) => new S3Error('InvalidTag', 400, message);
const charCount = (s: string) => [...s].length;

/** Too many tags: BadRequest for an object (as MinIO and S3 answer), InvalidTag for a bucket (S3; MinIO says MalformedXML). */
function checkTagCount(count: number, owner: TagOwner): void {
  if (owner === 'object' && count > MAX_OBJECT_TAGS) throw new S3Error('BadRequest', 400, `Object tags cannot be greater than ${MAX_OBJECT_TAGS}`);
  if (owner === 'bucket' && count > MAX_BUCKET_TAGS) throw invalidTag(`Bucket tags cannot be greater than ${MAX_BUCKET_TAGS}`);
}

/** Checks a tag set against S3's rules; the codes and messages are the ones MinIO answers with. */
export function validateTags(tags: Tag[], owner: TagOwner): Tag[] {
  checkTagCount(tags.length, owner);
  const seen = new Set<string>();
  for (const [key, value] of tags) {
    if (key.length === 0 || charCount(key) > MAX_TAG_KEY_CHARS || !TAG_CHARS_RE.test(key)) throw invalidTag('The TagKey you have provided is invalid');
    if (charCount(value) > MAX_TAG_VALUE_CHARS || !TAG_CHARS_RE.test(value)) throw invalidTag('The TagValue you have provided is invalid');
    if (seen.has(key)) throw invalidTag('Cannot provide multiple Tags with the same key');
    seen.add(key);
  }
  return tags;
}

/** `<Tagging><TagSet><Tag><Key/><Value/></Tag>...</TagSet></Tagging>` (already parsed, root checked by the caller). */
export function tagsFromXml(root: XmlElement, owner: TagOwner): Tag[] {
  const set = child(root, 'TagSet');
  if (set === undefined) throw new S3Error('MalformedXML', 400, 'The XML you provided was not well-formed or did not validate against our published schema.');
  // Counted before each Tag is read, so an oversized body fails on the limit, not on its contents.
  const elements = children(set, 'Tag');
  checkTagCount(elements.length, owner);
  const tags = elements.map((t): Tag => {
    const key = child(t, 'Key');
    if (key === undefined) throw invalidTag('The TagKey you have provided is invalid');
    // A Tag without a Value is an empty value, as MinIO takes it.
    return [key.text, child(t, 'Value')?.text ?? ''];
  });
  return validateTags(tags, owner);
}

/** x-amz-tagging: URL query form, `k1=v1&k2=v2` (a key without `=` has an empty value). */
export function tagsFromHeader(value: string): Tag[] {
  const tags: Tag[] = [];
  for (const [k, v] of new URLSearchParams(value)) tags.push([k, v]);
  return validateTags(tags, 'object');
}

export function taggingXml(tags: readonly Tag[]): string {
  const items = tags.map(([k, v]) => `<Tag>${tag('Key', k)}${tag('Value', v)}</Tag>`).join('');
  return `${XML_HEADER}<Tagging xmlns="${S3_NS}"><TagSet>${items}</TagSet></Tagging>`;
}
