// The XML S3 speaks: a small strict push parser for the few request bodies S3
// has (CompleteMultipartUpload, Delete, Tagging, ACL, configurations), fed a
// piece at a time as a body arrives, and escaping helpers for responses. No
// DTDs and no external entities, by construction.

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
/**
 * Longest construct (start or end tag, comment, CDATA section, processing
 * instruction) the push parser waits for across pieces: it rescans a
 * pending construct on each piece, so this bounds that work. Legal S3
 * bodies have no construct near it (a key is at most ~6 KiB escaped).
 */
const MAX_PENDING_CHARS = 64 * 1024;
/** Longest entity or character reference body between & and ; (&#x10FFFF; has 8). */
const MAX_REF_CHARS = 10;
const ENTITIES: Record<string, string> = { lt: '<', gt: '>', amp: '&', quot: '"', apos: "'" };

const LT = 0x3c;
const GT = 0x3e;
const SLASH = 0x2f;
const EQ = 0x3d;
const QUOT = 0x22;
const APOS = 0x27;

const isXmlSpace = (c: number) => c === 0x20 || c === 0x09 || c === 0x0a || c === 0x0d;
const isNameStart = (c: number) => (c >= 0x61 && c <= 0x7a) || (c >= 0x41 && c <= 0x5a) || c === 0x5f;
const isNameChar = (c: number) => isNameStart(c) || (c >= 0x30 && c <= 0x39) || c === 0x2e || c === 0x3a || c === 0x2d;

function decodeRef(ent: string): string {
  if (ent.charCodeAt(0) === 0x23) {
    const hex = ent[1] === 'x' || ent[1] === 'X';
    const digits = ent.slice(hex ? 2 : 1);
    if (!(hex ? /^[0-9A-Fa-f]{1,6}$/ : /^[0-9]{1,7}$/).test(digits)) throw new XmlSyntaxError(`bad character reference &${ent};`);
    const code = parseInt(digits, hex ? 16 : 10);
    // A surrogate is no character (XML's Char excludes it): as a lone UTF-16 unit it would be stored and looked up as U+FFFD, another key.
    if (code > 0x10ffff || (code >= 0xd800 && code <= 0xdfff)) throw new XmlSyntaxError(`bad character reference &${ent};`);
    return String.fromCodePoint(code);
  }
  const v = ENTITIES[ent];
  if (v === undefined) throw new XmlSyntaxError(`unknown entity &${ent};`);
  return v;
}

/** Text with its references decoded, in one pass (a regex pair over each text run cost 7 us per reference). */
function decodeEntities(s: string): string {
  let amp = s.indexOf('&');
  if (amp < 0) return s;
  // Pieces joined once: a += per reference built a rope as deep as the references.
  const out: string[] = [];
  let last = 0;
  while (amp >= 0) {
    let semi = -1;
    for (let j = amp + 1; j < s.length && j <= amp + MAX_REF_CHARS + 1; j++) {
      const c = s.charCodeAt(j);
      if (c === 0x3b) {
        semi = j;
        break;
      }
      if (c === 0x26 || isXmlSpace(c)) break;
    }
    if (semi < 0 || semi === amp + 1) throw new XmlSyntaxError('bare & in text');
    if (amp > last) out.push(s.slice(last, amp));
    out.push(decodeRef(s.slice(amp + 1, semi)));
    last = semi + 1;
    amp = s.indexOf('&', last);
  }
  out.push(s.slice(last));
  return out.join('');
}

const localName = (qname: string) => qname.slice(qname.indexOf(':') + 1);

export interface XmlParseOptions {
  /** Start tags allowed in the whole document; one more throws XmlLimitError. */
  maxElements?: number;
  /** Called at each start tag (depth 0 = the root) before the element is kept; may throw to refuse the document. */
  onElement?: (name: string, depth: number) => void;
}

/** A document over a caller's element limit (well-formed or not, it is refused unread). */
export class XmlLimitError extends XmlSyntaxError {
  override name = 'XmlLimitError';
}

/**
 * A strict XML parser fed in pieces: each `feed` parses every construct the
 * text so far completes and keeps the unfinished tail, so a request body is
 * parsed as it arrives, a piece at a time, never as one long run on the
 * event loop. One linear scan; no regular expression runs over a text of
 * unbounded length. No DTDs, no external entities.
 */
export class XmlPushParser {
  private buf = '';
  private pos = 0;
  private readonly stack: XmlElement[] = [];
  private root: XmlElement | undefined;
  private elements = 0;
  private started = false;

  constructor(private readonly opts: XmlParseOptions = {}) {}

  feed(text: string): void {
    this.buf = this.pos < this.buf.length ? this.buf.slice(this.pos) + text : text;
    this.pos = 0;
    if (!this.started && this.buf.length > 0) {
      this.started = true;
      if (this.buf.charCodeAt(0) === 0xfeff) this.pos = 1;
    }
    this.run(false);
    if (this.buf.length - this.pos > MAX_PENDING_CHARS) throw new XmlSyntaxError(`an XML construct is longer than ${MAX_PENDING_CHARS} characters`);
  }

  /** The document's root once the whole text was fed; throws XmlSyntaxError if it is incomplete. */
  end(): XmlElement {
    this.run(true);
    if (this.pos < this.buf.length || this.stack.length > 0 || !this.root) throw new XmlSyntaxError('document is incomplete');
    return this.root;
  }

  private text(raw: string): void {
    const top = this.stack[this.stack.length - 1];
    if (top) top.text += decodeEntities(raw);
    else if (raw.trim() !== '') throw new XmlSyntaxError('text outside the root element');
  }

  /** Parses complete constructs from pos on; stops at one the buffer does not finish yet (unless final). */
  private run(final: boolean): void {
    const doc = this.buf;
    const n = doc.length;
    const incomplete = (what: string) => {
      if (final) throw new XmlSyntaxError(what);
    };
    while (this.pos < n) {
      const i = this.pos;
      if (doc.charCodeAt(i) !== LT) {
        const next = doc.indexOf('<', i);
        if (next >= 0) {
          this.text(doc.slice(i, next));
          this.pos = next;
          continue;
        }
        // Text runs to the end of this piece: take it all but a reference the next piece may finish.
        let cut = n;
        const amp = doc.lastIndexOf('&');
        if (!final && amp >= i && amp >= n - (MAX_REF_CHARS + 2) && doc.indexOf(';', amp) < 0) cut = amp;
        this.text(doc.slice(i, cut));
        this.pos = cut;
        return;
      }
      if (n - i < 9 && !final) {
        // Too short to tell <!-- or <![CDATA[ from a DTD: wait, unless it is plainly a tag.
        const c1 = doc.charCodeAt(i + 1);
        if (n - i < 2 || c1 === 0x21) return;
      }
      const c1 = doc.charCodeAt(i + 1);
      if (c1 === 0x3f) {
        const end = doc.indexOf('?>', i + 2);
        if (end < 0) return incomplete('unterminated processing instruction');
        // The body is read as UTF-8 whatever it declares: a document in another
        // encoding would be read as other characters (other keys). Refused, as Go's
        // encoding/xml (MinIO) refuses it. The declaration is at most 64 KiB.
        if (doc.startsWith('<?xml', i) && isXmlSpace(doc.charCodeAt(i + 5))) {
          const enc = /\sencoding\s*=\s*(["'])([^"']*)\1/.exec(doc.slice(i + 5, end));
          if (enc && enc[2]!.toLowerCase() !== 'utf-8') throw new XmlSyntaxError(`encoding ${enc[2]} is not accepted (UTF-8 only)`);
        }
        this.pos = end + 2;
      } else if (c1 === 0x21) {
        if (doc.startsWith('<!--', i)) {
          const end = doc.indexOf('-->', i + 4);
          if (end < 0) return incomplete('unterminated comment');
          this.pos = end + 3;
        } else if (doc.startsWith('<![CDATA[', i)) {
          const end = doc.indexOf(']]>', i + 9);
          if (end < 0) return incomplete('bad CDATA section');
          const top = this.stack[this.stack.length - 1];
          if (!top) throw new XmlSyntaxError('bad CDATA section');
          top.text += doc.slice(i + 9, end);
          this.pos = end + 3;
        } else {
          throw new XmlSyntaxError('DTDs are not accepted');
        }
      } else if (c1 === SLASH) {
        const end = doc.indexOf('>', i);
        if (end < 0) return incomplete('unterminated end tag');
        const name = localName(doc.slice(i + 2, end).trim());
        const open = this.stack.pop();
        if (!open || open.name !== name) throw new XmlSyntaxError(`end tag </${name}> does not match`);
        this.pos = end + 1;
      } else if (!this.startTag(doc, i, final)) {
        return;
      }
    }
  }

  /** One start tag at i; false when the buffer ends inside it (and more may come). */
  private startTag(doc: string, i: number, final: boolean): boolean {
    const n = doc.length;
    let j = i + 1;
    if (j < n && !isNameStart(doc.charCodeAt(j))) throw new XmlSyntaxError('bad start tag');
    while (j < n && isNameChar(doc.charCodeAt(j))) j++;
    const qname = doc.slice(i + 1, j);
    // Attributes are parsed for well-formedness and then ignored (xmlns only, in S3).
    for (;;) {
      while (j < n && isXmlSpace(doc.charCodeAt(j))) j++;
      if (j >= n) break;
      const c = doc.charCodeAt(j);
      if (c === GT || c === SLASH) break;
      if (!isNameStart(c)) throw new XmlSyntaxError('bad attribute');
      while (j < n && isNameChar(doc.charCodeAt(j))) j++;
      while (j < n && isXmlSpace(doc.charCodeAt(j))) j++;
      if (j >= n) break;
      if (doc.charCodeAt(j) !== EQ) throw new XmlSyntaxError('bad attribute');
      j++;
      while (j < n && isXmlSpace(doc.charCodeAt(j))) j++;
      if (j >= n) break;
      const q = doc.charCodeAt(j);
      if (q !== QUOT && q !== APOS) throw new XmlSyntaxError('bad attribute');
      let k = j + 1;
      while (k < n && doc.charCodeAt(k) !== q) {
        if (doc.charCodeAt(k) === LT) throw new XmlSyntaxError('bad attribute');
        k++;
      }
      if (k >= n) {
        j = n;
        break;
      }
      j = k + 1;
    }
    const selfClosing = j < n && doc.charCodeAt(j) === SLASH;
    if (j >= n || (selfClosing && j + 1 >= n)) {
      if (final) throw new XmlSyntaxError('document is incomplete');
      return false;
    }
    if (selfClosing && doc.charCodeAt(j + 1) !== GT) throw new XmlSyntaxError('bad start tag');
    if (qname === '') throw new XmlSyntaxError('bad start tag');
    const depth = this.stack.length;
    if (depth === 0 && this.root) throw new XmlSyntaxError('more than one root element');
    if (this.opts.maxElements !== undefined && ++this.elements > this.opts.maxElements) throw new XmlLimitError(`more than ${this.opts.maxElements} elements`);
    const el: XmlElement = { name: localName(qname), children: [], text: '' };
    this.opts.onElement?.(el.name, depth);
    if (depth > 0) this.stack[depth - 1]!.children.push(el);
    else this.root = el;
    if (selfClosing) {
      this.pos = j + 2;
    } else {
      this.pos = j + 1;
      this.stack.push(el);
      if (this.stack.length > MAX_DEPTH) throw new XmlSyntaxError('document nests too deeply');
    }
    return true;
  }
}

/** Parses one whole document; throws XmlSyntaxError on anything malformed. */
export function parseXml(doc: string, opts?: XmlParseOptions): XmlElement {
  const p = new XmlPushParser(opts);
  p.feed(doc);
  return p.end();
}

export function child(el: XmlElement, name: string): XmlElement | undefined {
  return el.children.find((c) => c.name === name);
}

export function children(el: XmlElement, name: string): XmlElement[] {
  return el.children.filter((c) => c.name === name);
}

/**
 * Escapes text for an XML element; characters XML 1.0 cannot carry become
 * references, and so does CR, which every XML parser reads back as LF (a key
 * ending in CR would reach the client as another key).
 */
export function esc(s: string): string {
  return s.replace(/[<>&"'\u0000-\u0008\u000b-\u001f]/g, (c) => {
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
