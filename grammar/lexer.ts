// The .lovt lexer (Chevrotain). Reserved words are real keyword tokens; the
// statement words (param, buffer, input, config, loss, output, update, freeze,
// drop, train) are plain identifiers because PyTorch state names use some of
// them (`attention.output.dense`); the parser recognises them by position.
// docs/language.md §1 is the reference for everything here.

import { createToken, Lexer, type IToken, type TokenType } from 'chevrotain';

export const Identifier = createToken({ name: 'Identifier', pattern: /[A-Za-z_][A-Za-z0-9_]*/ });

function keyword(word: string): TokenType {
  return createToken({ name: word[0].toUpperCase() + word.slice(1), pattern: new RegExp(word), longer_alt: Identifier });
}

export const Import = keyword('import');
export const Block = keyword('block');
export const Fn = keyword('fn');
export const Model = keyword('model');
export const Extends = keyword('extends');
export const Let = keyword('let');
export const Return = keyword('return');
export const If = keyword('if');
export const Then = keyword('then');
export const Else = keyword('else');
export const For = keyword('for');
export const In = keyword('in');
export const And = keyword('and');
export const Or = keyword('or');
export const Not = keyword('not');
export const Enum = keyword('enum');
export const True = keyword('true');
export const False = keyword('false');
// `NAME = Block(...) as KEY`: a sub-module's state key (docs/language.md §6). Python's `as`
// is a keyword too, so no PyTorch attribute can be named `as`.
export const As = keyword('as');

export const RESERVED_WORDS = [
  'import',
  'block',
  'fn',
  'model',
  'extends',
  'let',
  'return',
  'if',
  'then',
  'else',
  'for',
  'in',
  'and',
  'or',
  'not',
  'enum',
  'true',
  'false',
  'as',
];
/** Identifiers that start a statement in certain positions (see parser.ts). */
export const STATEMENT_WORDS = ['param', 'buffer', 'input', 'config', 'loss', 'output', 'update', 'freeze', 'drop', 'train'];

// A float needs digits on both sides of the dot (so `0..3` lexes as 0 .. 3) or an exponent.
export const FloatLit = createToken({ name: 'FloatLit', pattern: /\d+(?:\.\d+(?:[eE][+-]?\d+)?|[eE][+-]?\d+)/ });
export const IntLit = createToken({ name: 'IntLit', pattern: /\d+/ });
export const StringLit = createToken({ name: 'StringLit', pattern: /"(?:[^"\\\n\r]|\\.)*"/ });

export const Arrow = createToken({ name: 'Arrow', pattern: /->/ });
export const Ellipsis = createToken({ name: 'Ellipsis', pattern: /\.\.\./ });
export const DotDot = createToken({ name: 'DotDot', pattern: /\.\./ });
export const Dot = createToken({ name: 'Dot', pattern: /\./ });
export const EqEq = createToken({ name: 'EqEq', pattern: /==/ });
export const NotEq = createToken({ name: 'NotEq', pattern: /!=/ });
export const LessEq = createToken({ name: 'LessEq', pattern: /<=/ });
export const GreaterEq = createToken({ name: 'GreaterEq', pattern: />=/ });
export const Less = createToken({ name: 'Less', pattern: /</ });
export const Greater = createToken({ name: 'Greater', pattern: />/ });
export const Assign = createToken({ name: 'Assign', pattern: /=/ });
export const StarStar = createToken({ name: 'StarStar', pattern: /\*\*/ });
export const Star = createToken({ name: 'Star', pattern: /\*/ });
export const Slash = createToken({ name: 'Slash', pattern: /\// });
export const Percent = createToken({ name: 'Percent', pattern: /%/ });
export const Plus = createToken({ name: 'Plus', pattern: /\+/ });
export const Minus = createToken({ name: 'Minus', pattern: /-/ });
export const LParen = createToken({ name: 'LParen', pattern: /\(/ });
export const RParen = createToken({ name: 'RParen', pattern: /\)/ });
export const LBracket = createToken({ name: 'LBracket', pattern: /\[/ });
export const RBracket = createToken({ name: 'RBracket', pattern: /\]/ });
export const LBrace = createToken({ name: 'LBrace', pattern: /\{/ });
export const RBrace = createToken({ name: 'RBrace', pattern: /\}/ });
export const Comma = createToken({ name: 'Comma', pattern: /,/ });
export const Colon = createToken({ name: 'Colon', pattern: /:/ });

export const LineComment = createToken({ name: 'LineComment', pattern: /\/\/[^\n\r]*/, group: Lexer.SKIPPED });
export const BlockComment = createToken({ name: 'BlockComment', pattern: /\/\*[\s\S]*?\*\//, group: Lexer.SKIPPED, line_breaks: true });
// Matched only when the well-formed versions above fail; tokenize() turns them into errors.
export const UnterminatedString = createToken({ name: 'UnterminatedString', pattern: /"(?:[^"\\\n\r]|\\.)*/ });
export const UnterminatedComment = createToken({ name: 'UnterminatedComment', pattern: /\/\*[\s\S]*/, line_breaks: true });
export const WhiteSpace = createToken({ name: 'WhiteSpace', pattern: /\s+/, group: Lexer.SKIPPED, line_breaks: true });

export const KEYWORDS = [Import, Block, Fn, Model, Extends, Let, Return, If, Then, Else, For, In, And, Or, Not, Enum, True, False, As];

export const ALL_TOKENS: TokenType[] = [
  WhiteSpace,
  LineComment,
  BlockComment,
  UnterminatedComment,
  ...KEYWORDS,
  Identifier,
  FloatLit,
  IntLit,
  StringLit,
  UnterminatedString,
  Arrow,
  Ellipsis,
  DotDot,
  Dot,
  EqEq,
  NotEq,
  LessEq,
  GreaterEq,
  Less,
  Greater,
  Assign,
  StarStar,
  Star,
  Slash,
  Percent,
  Plus,
  Minus,
  LParen,
  RParen,
  LBracket,
  RBracket,
  LBrace,
  RBrace,
  Comma,
  Colon,
];

export const lovtLexer = new Lexer(ALL_TOKENS, { positionTracking: 'full', ensureOptimizations: true });

export interface LexProblem {
  message: string;
  line: number;
  col: number;
  length: number;
}

export interface LexResult {
  tokens: IToken[];
  errors: LexProblem[];
}

/** Tokenises a whole file. Unknown characters become errors (one per run of them), never exceptions. */
export function tokenize(text: string): LexResult {
  const r = lovtLexer.tokenize(text);
  const errors: LexProblem[] = r.errors.map((e) => ({
    message: `unexpected character ${JSON.stringify(text.slice(e.offset, e.offset + 1))}`,
    line: e.line ?? 1,
    col: e.column ?? 1,
    length: Math.max(1, e.length),
  }));
  const tokens: IToken[] = [];
  for (const t of r.tokens) {
    if (t.tokenType === UnterminatedString)
      errors.push({ message: 'unterminated string literal', line: t.startLine ?? 1, col: t.startColumn ?? 1, length: t.image.length });
    else if (t.tokenType === UnterminatedComment)
      errors.push({ message: 'unterminated block comment', line: t.startLine ?? 1, col: t.startColumn ?? 1, length: 2 });
    else tokens.push(t);
  }
  errors.sort((a, b) => a.line - b.line || a.col - b.col);
  return { tokens, errors };
}
