// The XML S3 speaks: a small strict parser for the few request bodies S3 has
// (CompleteMultipartUpload, Delete, CreateBucketConfiguration) and escaping
// helpers for responses. No DTDs and no external entities, by construction.

export interface XmlElement {
  /** Local name (any namespace prefix dropped). */
  name: string;
  children: XmlElement[];
  text: string;
}

export class XmlSyntaxError extends Error {
  override name = 'XmlSyntaxError';
}

const MAX_DEPTH = 32;
const ENTITIES: Record<string, string> = { lt: '<', gt: '>', amp: '&', quot: '"', apos: "'" };

function decodeEntities(s: string): string {
  if (!s.includes('&')) return s;
  if (/&(?![^;&\s]{1,10};)/.test(s)) throw new XmlSyntaxError('bare & in text');
  return s.replace(/&([^;&\s]{1,10});/g, (m, ent: string) => {
    if (ent[0] === '#') {
      const code = ent[1] === 'x' || ent[1] === 'X' ? parseInt(ent.slice(2), 16) : parseInt(ent.slice(1), 10);
      if (!Number.isInteger(code) || code < 0 || code > 0x10ffff) throw new XmlSyntaxError(`bad character reference ${m}`);
      return String.fromCodePoint(code);
    }
    const v = ENTITIES[ent];
    if (v === undefined) throw new XmlSyntaxError(`unknown entity ${m}`);
    return v;
  });
}

const localName = (qname: string) => qname.slice(qname.indexOf(':') + 1);

/** Parses one document; throws XmlSyntaxError on anything malformed. */
export function parseXml(doc: string): XmlElement {
  let i = 0;
  const n = doc.length;
  const stack: XmlElement[] = [];
  let root: XmlElement | undefined;
  const skipWs = () => {
    while (i < n && /\s/.test(doc[i]!)) i++;
  };
  if (doc.charCodeAt(0) === 0xfeff) i = 1;
  while (i < n) {
    if (doc[i] !== '<') {
      const next = doc.indexOf('<', i);
      const raw = doc.slice(i, next < 0 ? n : next);
      if (stack.length === 0) {
        if (raw.trim() !== '') throw new XmlSyntaxError('text outside the root element');
      } else {
        stack[stack.length - 1]!.text += decodeEntities(raw);
      }
      i = next < 0 ? n : next;
      continue;
    }
    if (doc.startsWith('<?', i)) {
      const end = doc.indexOf('?>', i);
      if (end < 0) throw new XmlSyntaxError('unterminated processing instruction');
      i = end + 2;
    } else if (doc.startsWith('<!--', i)) {
      const end = doc.indexOf('-->', i);
      if (end < 0) throw new XmlSyntaxError('unterminated comment');
      i = end + 3;
    } else if (doc.startsWith('<![CDATA[', i)) {
      const end = doc.indexOf(']]>', i);
      if (end < 0 || stack.length === 0) throw new XmlSyntaxError('bad CDATA section');
      stack[stack.length - 1]!.text += doc.slice(i + 9, end);
      i = end + 3;
    } else if (doc.startsWith('<!', i)) {
      throw new XmlSyntaxError('DTDs are not accepted');
    } else if (doc[i + 1] === '/') {
      const end = doc.indexOf('>', i);
      if (end < 0) throw new XmlSyntaxError('unterminated end tag');
      const name = localName(doc.slice(i + 2, end).trim());
      const open = stack.pop();
      if (!open || open.name !== name) throw new XmlSyntaxError(`end tag </${name}> does not match`);
      i = end + 1;
    } else {
      i++;
      const m = /^([A-Za-z_][\w.:-]*)/.exec(doc.slice(i, i + 256));
      if (!m) throw new XmlSyntaxError('bad start tag');
      i += m[1]!.length;
      // Attributes are parsed for well-formedness and then ignored (xmlns only, in S3).
      for (;;) {
        skipWs();
        if (doc[i] === '>' || doc.startsWith('/>', i)) break;
        const a = /^[A-Za-z_][\w.:-]*\s*=\s*("[^"<]*"|'[^'<]*')/.exec(doc.slice(i, i + 4096));
        if (!a) throw new XmlSyntaxError('bad attribute');
        i += a[0].length;
      }
      const el: XmlElement = { name: localName(m[1]!), children: [], text: '' };
      if (stack.length > 0) stack[stack.length - 1]!.children.push(el);
      else if (root) throw new XmlSyntaxError('more than one root element');
      else root = el;
      if (doc.startsWith('/>', i)) {
        i += 2;
      } else {
        i++;
        stack.push(el);
        if (stack.length > MAX_DEPTH) throw new XmlSyntaxError('document nests too deeply');
      }
    }
  }
  if (stack.length > 0 || !root) throw new XmlSyntaxError('document is incomplete');
  return root;
}

export function child(el: XmlElement, name: string): XmlElement | undefined {
  return el.children.find((c) => c.name === name);
}

export function children(el: XmlElement, name: string): XmlElement[] {
  return el.children.filter((c) => c.name === name);
}

/** Escapes text for an XML element; characters XML 1.0 cannot carry become references. */
export function esc(s: string): string {
  return s.replace(/[<>&"'\u0000-\u0008\u000b\u000c\u000e-\u001f]/g, (c) => {
    switch (c) {
      case '<':
        return '&lt;';
      case '>':
        return '&gt;';
      case '&':
        return '&amp;';
      case '"':
        return '&quot;';
      case "'":
        return '&apos;';
      default:
        return `&#x${c.charCodeAt(0).toString(16)};`;
    }
  });
}

export const XML_HEADER = '<?xml version="1.0" encoding="UTF-8"?>\n';
export const S3_NS = 'http://s3.amazonaws.com/doc/2006-03-01/';

/** `<Name>escaped</Name>`; undefined values produce nothing. */
export function tag(name: string, value: string | number | boolean | undefined): string {
  if (value === undefined) return '';
  return `<${name}>${esc(String(value))}</${name}>`;
}
