// The S3 request XML parser (src/dataplane/s3/xml.ts): fed in pieces split
// anywhere, it builds the same tree as from the whole text and refuses the same
// malformed documents; element limits stop it at the first element over.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { XmlLimitError, XmlPushParser, XmlSyntaxError, parseXml, type XmlElement } from '../src/dataplane/s3/xml.js';

const GOOD = [
  '<?xml version="1.0" encoding="UTF-8"?>\n<Delete xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Quiet>true</Quiet><Object><Key>a&amp;b &lt;c&gt; &quot;d&quot; &apos;e&apos;</Key><VersionId>null</VersionId></Object></Delete>',
  '\ufeff<a x="1" y = \'t>u\'><!-- c > d --><b>&#x1F600;&#65;&#x41;</b><![CDATA[<raw & text>]]><s:c/><c   /></a>\n',
  '<Tagging><TagSet><Tag><Key>k</Key><Value></Value></Tag></TagSet></Tagging>',
  `<Delete>${`<Object><Key>${'&quot;'.repeat(40)}</Key></Object>`.repeat(3)}</Delete>`,
];
const BAD = [
  '<!DOCTYPE x [<!ENTITY e "v">]><x>&e;</x>',
  '<a>&e;</a>',
  '<a>a & b</a>',
  '<a>&#xZZ;</a>',
  '<a>&#12ab;</a>',
  '<a>&#x110000;</a>',
  '<a></b>',
  '<a/><b/>',
  'text<a/>',
  '<a><!-- open</a>',
  '<a x=1/>',
  '<a x="<"/>',
  '<a><b></a>',
  '<a>',
  '< a/>',
  '',
  `${'<a>'.repeat(33)}${'</a>'.repeat(33)}`,
];

/** The document fed as `pieceChars`-sized pieces. */
function fed(doc: string, pieceChars: number, opts?: ConstructorParameters<typeof XmlPushParser>[0]): XmlElement {
  const p = new XmlPushParser(opts);
  for (let i = 0; i < doc.length; i += pieceChars) p.feed(doc.slice(i, i + pieceChars));
  return p.end();
}

describe('S3 XML push parser', () => {
  it('pieces split at every position give the tree of the whole text', () => {
    for (const doc of GOOD) {
      const whole = parseXml(doc);
      for (const size of [1, 2, 3, 7, 13]) assert.deepEqual(fed(doc, size), whole, `pieces of ${size}: ${doc.slice(0, 40)}`);
      for (let cut = 1; cut < doc.length; cut++) {
        const p = new XmlPushParser();
        p.feed(doc.slice(0, cut));
        p.feed(doc.slice(cut));
        assert.deepEqual(p.end(), whole, `cut at ${cut}: ${doc.slice(0, 40)}`);
      }
    }
    const d = parseXml(GOOD[0]!);
    assert.equal(d.name, 'Delete');
    assert.equal(d.children[1]!.children[0]!.text, `a&b <c> "d" 'e'`);
    const a = parseXml(GOOD[1]!);
    assert.deepEqual(a.children.map((c) => c.name), ['b', 'c', 'c']);
    assert.equal(a.children[0]!.text, '\u{1F600}AA');
    assert.equal(a.text, '<raw & text>');
  });

  it('malformed documents are refused whole and in single characters', () => {
    for (const doc of BAD) {
      assert.throws(() => parseXml(doc), XmlSyntaxError, `whole: ${doc.slice(0, 40)}`);
      assert.throws(() => fed(doc, 1), XmlSyntaxError, `pieces: ${doc.slice(0, 40)}`);
    }
  });

  it('maxElements stops at the first element over; onElement sees each start tag with its depth and can refuse', () => {
    const doc = `<Delete>${'<Object><Key>k</Key></Object>'.repeat(10)}</Delete>`;
    assert.equal(parseXml(doc, { maxElements: 21 }).children.length, 10);
    assert.throws(() => parseXml(doc, { maxElements: 20 }), (e: Error) => e instanceof XmlLimitError && /more than 20 elements/.test(e.message));
    const seen: string[] = [];
    parseXml(doc, { onElement: (name, depth) => seen.push(`${depth}${name}`) });
    assert.deepEqual(seen.slice(0, 4), ['0Delete', '1Object', '2Key', '1Object']);
    assert.equal(seen.length, 21);
    let objects = 0;
    const refuse = new Error('sixth object');
    assert.throws(() => fed(doc, 5, { onElement: (name, depth) => { if (depth === 1 && name === 'Object' && ++objects > 5) throw refuse; } }), (e) => e === refuse);
    assert.equal(objects, 6);
  });

  it('a construct left open past 64 KiB is refused while feeding, not kept growing', () => {
    const p = new XmlPushParser();
    p.feed('<a><!--');
    assert.throws(() => {
      for (let i = 0; i < 80; i++) p.feed('x'.repeat(1024));
    }, /longer than 65536 characters/);
    // Text is consumed as it comes: a long text run is no open construct.
    const q = new XmlPushParser();
    q.feed('<a>');
    for (let i = 0; i < 200; i++) q.feed('y'.repeat(1024));
    q.feed('</a>');
    assert.equal(q.end().text.length, 200 * 1024);
  });
});
