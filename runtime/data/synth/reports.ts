// SynthCXR radiology reports: MIMIC-style free text (FINAL REPORT, EXAMINATION, INDICATION,
// TECHNIQUE, COMPARISON, FINDINGS, IMPRESSION) whose sentences name each finding and its
// location with varied phrasing, plus normal statements and negations for what is absent.
// Each FINDINGS/IMPRESSION sentence records which findings it names, so the annotations can
// link findings to sentences.
import type { Rng } from '../random.ts';
import type { Finding, Side, Zone } from './phantom.ts';

export interface ReportSentence {
  text: string;
  /** Indices into the study's findings that this sentence names. */
  findings: number[];
}

export interface SynthReport {
  text: string;
  findingsSentences: ReportSentence[];
  impressionSentences: ReportSentence[];
}

function cap(s: string): string {
  return s.charAt(0).toUpperCase() + s.slice(1);
}

const ZONE_WORDS: Record<Zone, string[]> = {
  upper: ['upper', 'upper'],
  middle: ['mid', 'middle'],
  lower: ['lower', 'lower'],
};

function zonePhrase(rng: Rng, side: Side, zone: Zone): string {
  const z = rng.pick(ZONE_WORDS[zone]);
  if (zone === 'lower' && rng.bernoulli(0.35)) return `${side} lung base`;
  if (zone === 'upper' && rng.bernoulli(0.2)) return `${side} apex`;
  return rng.pick([`${side} ${z} lung zone`, `${side} ${z} lung`, `${side} ${z} zone`]);
}

function findingSentence(f: Finding, rng: Rng): string {
  const side = f.side ?? 'right';
  switch (f.type) {
    case 'consolidation': {
      const where = zonePhrase(rng, side, f.zone!);
      return rng.pick([
        `There is a focal consolidation in the ${where}.`,
        `Patchy airspace opacity is seen in the ${where}, concerning for pneumonia.`,
        `New opacity in the ${where} may reflect atelectasis or pneumonia.`,
        `Consolidation is present in the ${where}.`,
        `An area of increased opacity projects over the ${where}.`,
      ]);
    }
    case 'nodule': {
      const where = zonePhrase(rng, side, f.zone!);
      const size = (f.sizeCm ?? 1.5).toFixed(1);
      return rng.pick([
        `A ${size} cm nodule projects over the ${where}.`,
        `There is a ${size} cm rounded nodular opacity in the ${where}.`,
        `A well-circumscribed nodule measuring ${size} cm is seen in the ${where}.`,
      ]);
    }
    case 'effusion': {
      const sev = f.severity ?? 'small';
      return rng.pick([
        `There is a ${sev} ${side} pleural effusion with blunting of the ${side} costophrenic angle.`,
        `A ${sev} ${side} pleural effusion is present.`,
        `${cap(side)} costophrenic angle is blunted, consistent with a ${sev} effusion.`,
        `${cap(sev)} ${side} pleural effusion layers at the ${side} base.`,
      ]);
    }
    case 'pneumothorax': {
      const sev = f.severity ?? 'small';
      return rng.pick([
        `There is a ${sev} ${side} apical pneumothorax.`,
        `A ${sev} ${side} pneumothorax is noted along the lateral chest wall.`,
        `${cap(side)} pneumothorax is seen, ${sev} in size, with a visible pleural line.`,
      ]);
    }
    case 'cardiomegaly':
      return rng.pick([
        'The heart is moderately enlarged.',
        'Cardiomegaly is present.',
        'The cardiac silhouette is enlarged.',
        'There is moderate enlargement of the cardiac silhouette.',
      ]);
    case 'line':
      if (f.lineKind === 'ett') {
        const cm = (3 + Math.round(rng.uniform(0, 20)) / 10).toFixed(1);
        return rng.pick([`Endotracheal tube tip is ${cm} cm above the carina.`, `An endotracheal tube terminates ${cm} cm above the carina.`]);
      }
      return rng.pick([
        'A right internal jugular central venous catheter terminates in the mid SVC.',
        'Right IJ central line tip projects over the SVC.',
        'A right-sided central venous catheter is in place with its tip in the superior vena cava.',
      ]);
    case 'device': {
      const where = zonePhrase(rng, side, f.zone ?? 'upper');
      return rng.pick([
        `A coin-shaped metallic density projects over the ${where}.`,
        `A round radiopaque device projects over the ${where}.`,
        `A pacemaker generator projects over the ${side} upper chest.`,
      ]);
    }
  }
}

function impressionPhrase(f: Finding, rng: Rng): string {
  const side = f.side ?? 'right';
  switch (f.type) {
    case 'consolidation':
      return rng.pick([
        `${cap(side)} ${f.zone === 'middle' ? 'mid' : f.zone} lung consolidation, concerning for pneumonia.`,
        `${cap(side)} ${f.zone} zone opacity.`,
      ]);
    case 'nodule':
      return rng.pick([`${(f.sizeCm ?? 1.5).toFixed(1)} cm ${side} ${f.zone} lung nodule. ${FOLLOW_UP_SENTENCES[0]}`, `${cap(side)} ${f.zone} lung nodule.`]);
    case 'effusion':
      return rng.pick([`${cap(f.severity ?? 'small')} ${side} pleural effusion.`, `${cap(side)} pleural effusion.`]);
    case 'pneumothorax':
      return rng.pick([`${cap(f.severity ?? 'small')} ${side} pneumothorax.`, `${cap(side)} pneumothorax.`]);
    case 'cardiomegaly':
      return rng.pick(['Cardiomegaly.', 'Moderate cardiomegaly.']);
    case 'line':
      return f.lineKind === 'ett' ? 'Endotracheal tube in standard position.' : 'Right IJ catheter in appropriate position.';
    case 'device':
      return `Radiopaque device over the ${side} hemithorax.`;
  }
}

/**
 * A sentence that follows a finding's phrase but does not name the finding: the
 * annotations link it to no finding (phrase grounding would otherwise score it).
 */
export const FOLLOW_UP_SENTENCES: readonly string[] = ['Recommend CT for further evaluation.'];

/** Builds a report for the findings (indices of `findings` are recorded per sentence). */
export function writeReport(findings: readonly Finding[], rng: Rng, meta: { age: number; sex: 'M' | 'F'; views: string }): SynthReport {
  const has = (t: Finding['type']) => findings.some((f) => f.type === t);
  const findingsSentences: ReportSentence[] = [];
  // Lines/devices first (as radiologists usually do), then lungs, pleura, heart.
  const order = findings.map((f, i) => i).sort((i, j) => rank(findings[i]) - rank(findings[j]));
  for (const i of order) findingsSentences.push({ text: findingSentence(findings[i], rng), findings: [i] });
  // Normal statements and negations for what is absent.
  const normals: string[] = [];
  if (!has('consolidation') && !has('nodule')) {
    normals.push(
      rng.pick(['The lungs are clear.', 'No focal consolidation is seen.', 'Lungs are clear without focal consolidation.', 'There is no focal consolidation.']),
    );
  }
  if (!has('effusion') && !has('pneumothorax')) {
    normals.push(
      rng.pick(['No pleural effusion or pneumothorax.', 'There is no pleural effusion or pneumothorax.', 'No pleural effusion or pneumothorax is seen.']),
    );
  } else {
    if (!has('effusion')) normals.push(rng.pick(['No pleural effusion.', 'There is no pleural effusion.']));
    if (!has('pneumothorax')) normals.push(rng.pick(['No pneumothorax.', 'There is no pneumothorax.']));
  }
  if (!has('cardiomegaly')) {
    normals.push(
      rng.pick([
        'The cardiomediastinal silhouette is within normal limits.',
        'Heart size is normal.',
        'The heart size is normal and the mediastinal contours are unremarkable.',
        'Cardiomediastinal and hilar contours are normal.',
      ]),
    );
  }
  if (rng.bernoulli(0.4)) normals.push(rng.pick(['No acute osseous abnormality.', 'Osseous structures are intact.', 'No acute fracture is seen.']));
  rng.shuffle(normals);
  for (const text of normals) findingsSentences.push({ text, findings: [] });

  const impressionSentences: ReportSentence[] = [];
  const abnormal = order.filter((i) => findings[i].type !== 'line' || rng.bernoulli(0.5));
  if (abnormal.length === 0) {
    impressionSentences.push({
      text: rng.pick(['No acute cardiopulmonary process.', 'No acute intrathoracic abnormality.', 'Normal chest radiograph.']),
      findings: [],
    });
  } else {
    for (const i of abnormal) impressionSentences.push({ text: impressionPhrase(findings[i], rng), findings: [i] });
  }
  const numbered = impressionSentences.length >= 2 && rng.bernoulli(0.5);
  const notify = findings.some((f) => f.type === 'pneumothorax') && rng.bernoulli(0.6);

  // Assemble MIMIC-style text with line wrapping inside sections.
  const lines: string[] = [];
  lines.push('                                 FINAL REPORT');
  lines.push(` EXAMINATION:  CHEST (${meta.views})`);
  lines.push(' ');
  lines.push(
    ` INDICATION:  ___ year old ${meta.sex === 'M' ? 'man' : 'woman'} with ${rng.pick(['shortness of breath', 'cough and fever', 'chest pain', 'hypoxia', 'line placement'])}.  Evaluate for ${rng.pick(['pneumonia', 'effusion', 'interval change', 'acute process'])}.`,
  );
  lines.push(' ');
  lines.push(` TECHNIQUE:  Chest ${meta.views}`);
  lines.push(' ');
  lines.push(` COMPARISON:  ${rng.pick(['None.', '___', 'Chest radiograph from ___.'])}`);
  lines.push(' ');
  lines.push(' FINDINGS: ');
  lines.push(' ');
  lines.push(...wrap(findingsSentences.map((s) => s.text).join('  '), 70).map((l) => ` ${l}`));
  lines.push(' ');
  lines.push(' IMPRESSION: ');
  lines.push(' ');
  if (numbered) {
    impressionSentences.forEach((s, k) => lines.push(...wrap(`${k + 1}. ${s.text}`, 70).map((l) => ` ${l}`)));
  } else {
    lines.push(...wrap(impressionSentences.map((s) => s.text).join('  '), 70).map((l) => ` ${l}`));
  }
  if (notify) {
    lines.push(' ');
    const hour = 8 + Math.floor(rng.uniform(0, 10));
    const minute = String(Math.floor(rng.uniform(0, 60))).padStart(2, '0');
    lines.push(
      ` NOTIFICATION:  Findings were discussed with Dr. ${rng.pick(['Smith', 'Jones', 'Lee', '___'])} by telephone at ${hour}:${minute} on the day of the study.`,
    );
  }
  return { text: lines.join('\n') + '\n', findingsSentences, impressionSentences };
}

function rank(f: Finding): number {
  return ['line', 'device', 'consolidation', 'nodule', 'effusion', 'pneumothorax', 'cardiomegaly'].indexOf(f.type);
}

/** Greedy word wrap (report lines in MIMIC are wrapped near 70–80 columns). */
function wrap(text: string, width: number): string[] {
  const out: string[] = [];
  let line = '';
  for (const word of text.split(/ (?=\S)/)) {
    if (line !== '' && line.length + 1 + word.length > width) {
      out.push(line);
      line = word.trimStart();
    } else {
      line = line === '' ? word : `${line} ${word}`;
    }
  }
  if (line !== '') out.push(line);
  return out;
}
