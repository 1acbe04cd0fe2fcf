// Radiology report text → the sentence list LoVT trains on (method §1): FINDINGS sentences
// followed by IMPRESSION sentences. Sections are found by their headers in the free text
// (the header names and their normalisation follow the MIMIC-CXR section parser, including
// its recorded misspellings); sentences are split with `sbd`, a rule-based English sentence
// boundary detector that keeps abbreviations ("Dr.", "a.m."), decimals ("1.5 cm") and list
// numbers intact; then newlines become spaces and whitespace is collapsed.
import sbd from 'sbd';

/** Canonical section names used here. */
export type SectionName =
  | 'findings'
  | 'impression'
  | 'examination'
  | 'indication'
  | 'history'
  | 'technique'
  | 'comparison'
  | 'notification'
  | 'recommendations'
  | 'addendum'
  | 'wet read'
  | 'date'
  | 'comment'
  | 'final report'
  | 'other';

// Header text (lower-cased, inner whitespace collapsed) → canonical section. From the
// MIMIC-CXR section parser's frequent headers; "findings and impression" style combined
// headers count as impression there, and so here.
const SECTION_ALIASES: Record<string, SectionName> = {
  findings: 'findings',
  finding: 'findings',
  findins: 'findings',
  findindgs: 'findings',
  findgings: 'findings',
  findngs: 'findings',
  findnings: 'findings',
  finidngs: 'findings',
  'reference findings': 'findings',
  'chest, two views': 'findings',
  impression: 'impression',
  impressions: 'impression',
  conclusion: 'impression',
  conclusions: 'impression',
  'findings and impression': 'impression',
  'findings/impression': 'impression',
  'findings / impression': 'impression',
  'findings/ impression': 'impression',
  impresson: 'impression',
  imprression: 'impression',
  imoression: 'impression',
  impressoin: 'impression',
  imprssion: 'impression',
  impresion: 'impression',
  imperssion: 'impression',
  mpression: 'impression',
  impession: 'impression',
  examination: 'examination',
  exam: 'examination',
  'type of examination': 'examination',
  indication: 'indication',
  indications: 'indication',
  'reason for examination': 'indication',
  'reason for exam': 'indication',
  'clinical indication': 'indication',
  idication: 'indication',
  history: 'history',
  'clinical history': 'history',
  'clinical information': 'history',
  'patient history': 'history',
  pfi: 'history',
  technique: 'technique',
  comparison: 'comparison',
  comparisons: 'comparison',
  'reference exam': 'comparison',
  'comparison exam': 'comparison',
  'comparison film': 'comparison',
  comparision: 'comparison',
  comparsion: 'comparison',
  comparrison: 'comparison',
  comparisions: 'comparison',
  notification: 'notification',
  recommendation: 'recommendations',
  recommendations: 'recommendations',
  'recommendation(s)': 'recommendations',
  addendum: 'addendum',
  'wet read': 'wet read',
  wetread: 'wet read',
  date: 'date',
  comment: 'comment',
  comments: 'comment',
  'final report': 'final report',
};

export interface ReportSections {
  /** Text of the FINDINGS section(s), or null when there is none. */
  findings: string | null;
  /** Text of the IMPRESSION section(s), or null when there is none. */
  impression: string | null;
  /** Every section found, in order (canonical name, header as written, text). */
  all: { name: SectionName; header: string; text: string }[];
}

// A header starts a line (after optional spaces) and ends with a colon: "FINDINGS:",
// " IMPRESSION:", "Findings:", "FINDINGS AND IMPRESSION:", "WET READ:". Words may contain
// letters, '/', '(', ')', ',', '&' and '-'.
const HEADER_LINE = /^[ \t]*([A-Za-z][A-Za-z()/,&\- ]{0,48}?)[ \t]*:/gm;

/**
 * Splits a report into its sections. A known header (any case) or any ALL-CAPS header at the
 * start of a line begins a section; a section's text runs to the next header. Text before
 * the first header is the preamble (ignored).
 */
export function extractSections(text: string): ReportSections {
  const normalizedText = text.replace(/\r\n?/g, '\n');
  const headers: { name: SectionName; header: string; start: number; bodyStart: number }[] = [];
  for (const match of normalizedText.matchAll(HEADER_LINE)) {
    const header = match[1].trim();
    const key = header.toLowerCase().replace(/\s+/g, ' ');
    const known = SECTION_ALIASES[key];
    const allCaps = /[A-Z]/.test(header) && header === header.toUpperCase();
    if (!known && !allCaps) continue; // e.g. "Dr. Smith:" or "Note that:" inside a sentence line
    headers.push({ name: known ?? 'other', header, start: match.index!, bodyStart: match.index! + match[0].length });
  }
  const all: ReportSections['all'] = [];
  for (let i = 0; i < headers.length; i++) {
    const end = i + 1 < headers.length ? headers[i + 1].start : normalizedText.length;
    all.push({ name: headers[i].name, header: headers[i].header, text: normalizedText.slice(headers[i].bodyStart, end).trim() });
  }
  const join = (name: SectionName): string | null => {
    const parts = all.filter((s) => s.name === name);
    if (parts.length === 0) return null;
    return parts
      .map((s) => s.text)
      .filter((t) => t !== '')
      .join('\n');
  };
  return { findings: join('findings'), impression: join('impression'), all };
}

/** Newlines → spaces, runs of whitespace → one space, trimmed. */
export function cleanWhitespace(text: string): string {
  return text.replace(/\s+/g, ' ').trim();
}

// A list item marker at the start of a line: "1.", "2)", "(3)", "-", "*", "•".
const LIST_ITEM_START = /^[ \t]*(?:\(?\d{1,2}[.)](?!\d)|[-*•])[ \t]+/gm;

export interface SentenceOptions {
  /** Remove "1." / "2)" list numbers at the start of sentences (default true): they carry no content. */
  stripListNumbers?: boolean;
}

/**
 * Splits section text into cleaned sentences. List items on their own lines are always
 * sentence boundaries, even without a final period ("1. Small effusion\n2. No pneumothorax").
 */
export function splitSentences(text: string, opts: SentenceOptions = {}): string[] {
  const stripNumbers = opts.stripListNumbers ?? true;
  // Break before each line-initial list marker so that items without a final period still
  // end a sentence; a period-less line followed by a new item gets one.
  const chunks: string[] = [];
  let last = 0;
  const normalized = text.replace(/\r\n?/g, '\n');
  for (const match of normalized.matchAll(LIST_ITEM_START)) {
    if (match.index! > last) chunks.push(normalized.slice(last, match.index));
    last = match.index!;
  }
  chunks.push(normalized.slice(last));
  const sentences: string[] = [];
  for (const chunk of chunks) {
    const cleaned = cleanWhitespace(chunk);
    if (cleaned === '') continue;
    for (const raw of sbd.sentences(cleaned, { newline_boundaries: false, preserve_whitespace: false })) {
      let sentence = cleanWhitespace(raw);
      if (stripNumbers) sentence = sentence.replace(/^(?:\(?\d{1,2}[.)](?!\d)|[-*•])\s+/, '');
      // Drop fragments with no letters or digits (stray "." or "___").
      if (/[A-Za-z0-9]/.test(sentence.replace(/_+/g, ''))) sentences.push(sentence);
    }
  }
  return sentences;
}

export interface ReportSentences {
  sentences: string[];
  /** How many of `sentences` come from FINDINGS (the rest are IMPRESSION). */
  findingsCount: number;
  hasFindings: boolean;
  hasImpression: boolean;
}

/** FINDINGS sentences followed by IMPRESSION sentences (method §1). */
export function reportSentences(text: string, opts: SentenceOptions = {}): ReportSentences {
  const sections = extractSections(text);
  const findings = sections.findings !== null ? splitSentences(sections.findings, opts) : [];
  const impression = sections.impression !== null ? splitSentences(sections.impression, opts) : [];
  return {
    sentences: [...findings, ...impression],
    findingsCount: findings.length,
    hasFindings: sections.findings !== null,
    hasImpression: sections.impression !== null,
  };
}
