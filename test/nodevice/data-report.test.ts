// Section extraction and sentence splitting on hand-written MIMIC-style reports.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { cleanWhitespace, extractSections, reportSentences, splitSentences } from '../../runtime/data/report.ts';

const STANDARD = `                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)
 
 INDICATION:  ___F with new cough and fever, evaluate for pneumonia.
 
 TECHNIQUE:  Chest PA and lateral
 
 COMPARISON:  ___
 
 FINDINGS: 
 
 There is a 1.5 cm nodule in the right upper lobe.  Dr. Smith was notified
 at 10:30 a.m. by telephone.  Heart size is
 normal.  The ET tube terminates 4.5 cm above the carina.
 
 IMPRESSION: 
 
 1. Right upper lobe nodule, 1.5 cm.
 2. No pneumothorax
 3. Small left pleural effusion.
 
 NOTIFICATION:  Findings discussed with Dr. ___ at 11:00.
`;

test('standard report: sections in order, FINDINGS then IMPRESSION sentences', () => {
  const sections = extractSections(STANDARD);
  assert.equal(
    sections.all.map((s) => s.name),
    ['examination', 'indication', 'technique', 'comparison', 'findings', 'impression', 'notification'],
  );
  const r = reportSentences(STANDARD);
  assert.equal(r.sentences, [
    'There is a 1.5 cm nodule in the right upper lobe.',
    'Dr. Smith was notified at 10:30 a.m. by telephone.',
    'Heart size is normal.',
    'The ET tube terminates 4.5 cm above the carina.',
    'Right upper lobe nodule, 1.5 cm.',
    'No pneumothorax',
    'Small left pleural effusion.',
  ]);
  assert.is(r.findingsCount, 4);
  assert.ok(r.hasFindings && r.hasImpression);
});

test('numbered list kept with its numbers when asked; inline numbered list split', () => {
  const text = 'IMPRESSION: 1. Moderate right pleural effusion. 2. Bibasilar atelectasis. 3. No pneumothorax.';
  assert.equal(reportSentences(text).sentences, ['Moderate right pleural effusion.', 'Bibasilar atelectasis.', 'No pneumothorax.']);
  assert.equal(reportSentences(text, { stripListNumbers: false }).sentences, [
    '1. Moderate right pleural effusion.',
    '2. Bibasilar atelectasis.',
    '3. No pneumothorax.',
  ]);
});

test('header variants: lower/mixed case, inline text, combined FINDINGS AND IMPRESSION, CONCLUSION, misspellings', () => {
  const a = 'Findings: The lungs are clear.\nImpression: Normal chest.';
  assert.equal(reportSentences(a).sentences, ['The lungs are clear.', 'Normal chest.']);
  assert.is(reportSentences(a).findingsCount, 1);

  const b = ` WET READ: ___ ___ 2:15 PM  no pneumothorax
 
 FINDINGS AND IMPRESSION:  Portable AP view of the chest.  Left-sided PICC terminates in the
 mid SVC.  No focal consolidation.
`;
  const rb = reportSentences(b);
  assert.is(rb.hasFindings, false);
  assert.is(rb.hasImpression, true);
  assert.equal(rb.sentences, ['Portable AP view of the chest.', 'Left-sided PICC terminates in the mid SVC.', 'No focal consolidation.']);

  const c = 'HISTORY: Cough.\n\nCONCLUSION:\nNo acute cardiopulmonary process.';
  assert.equal(reportSentences(c).sentences, ['No acute cardiopulmonary process.']);

  const d = 'FINDNGS: Mild pulmonary edema.\nIMPRESSON: Edema.';
  assert.equal(reportSentences(d).sentences, ['Mild pulmonary edema.', 'Edema.']);
});

test('missing sections: impression only, findings only, neither', () => {
  const onlyImpression = 'EXAMINATION: Chest.\nIMPRESSION: Stable cardiomegaly.';
  const r1 = reportSentences(onlyImpression);
  assert.equal(r1.sentences, ['Stable cardiomegaly.']);
  assert.is(r1.hasFindings, false);
  assert.is(r1.findingsCount, 0);

  const onlyFindings = ' FINDINGS:\n Lungs are clear.  No effusion.\n';
  assert.equal(reportSentences(onlyFindings).sentences, ['Lungs are clear.', 'No effusion.']);

  const neither = 'EXAMINATION: Chest.\nINDICATION: Cough.\nThe lungs are clear.';
  const r3 = reportSentences(neither);
  assert.ok(!r3.hasFindings && !r3.hasImpression);
  assert.equal(r3.sentences, []);

  const empty = 'FINDINGS:\n\nIMPRESSION:\n';
  const r4 = reportSentences(empty);
  assert.ok(r4.hasFindings && r4.hasImpression);
  assert.equal(r4.sentences, []);
});

test('mixed-case colon lines inside a section do not start sections; ALL-CAPS unknown headers end them', () => {
  const text = `FINDINGS:
 Compared with the prior exam the following: the lungs are clear.
 Lines and tubes: unchanged.
RECOMMENDATION(S):  Follow-up CT in 3 months.
 IMPRESSION:  No change.
ADDENDUM: Dr. Jones reviewed the study.
`;
  const r = reportSentences(text);
  assert.equal(r.sentences, ['Compared with the prior exam the following: the lungs are clear.', 'Lines and tubes: unchanged.', 'No change.']);
});

test('CRLF line endings, repeated sections and stray fragments', () => {
  const text = 'FINDINGS:\r\n  Mild   cardiomegaly.\r\n  ___.\r\nIMPRESSION:\r\n  Cardiomegaly.\r\nFINDINGS:\r\n  Addendum finding.';
  const r = reportSentences(text);
  assert.equal(r.sentences, ['Mild cardiomegaly.', 'Addendum finding.', 'Cardiomegaly.']);
});

test('sentence splitting: abbreviations, decimals, times, list items without periods', () => {
  assert.equal(splitSentences('Findings were discussed with Dr. Jones at 3:45 p.m. on ___.  ET tube is 2.5 cm above the carina.'), [
    'Findings were discussed with Dr. Jones at 3:45 p.m. on ___.',
    'ET tube is 2.5 cm above the carina.',
  ]);
  assert.equal(splitSentences('1. Small effusion\n2. No pneumothorax\n3) Stable heart size'), ['Small effusion', 'No pneumothorax', 'Stable heart size']);
  assert.equal(splitSentences('- Right PICC in place.\n- No pneumothorax.'), ['Right PICC in place.', 'No pneumothorax.']);
  assert.equal(splitSentences('Is there free air? No free air is seen!'), ['Is there free air?', 'No free air is seen!']);
  assert.equal(splitSentences('   '), []);
});

test('cleanWhitespace collapses newlines, tabs and runs of spaces', () => {
  assert.is(cleanWhitespace('  a\n\tb   c \r\n d  '), 'a b c d');
});

test.run();
