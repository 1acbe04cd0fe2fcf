// The .lovt parser: a Chevrotain EmbeddedActionsParser that builds the typed
// AST of ast.ts directly. For error recovery the token stream is cut into
// top-level declarations (at `import`, `block`, `fn`, `model` outside any
// brackets) and each is parsed on its own, so one syntax error per
// declaration is reported and the others still parse. docs/language.md is
// the reference for the syntax.

import { type DSLMethodOpts, EmbeddedActionsParser, EOF, type IOrAlt, type IToken, type TokenType } from 'chevrotain';
import {
  ALL_TOKENS,
  And,
  Arrow,
  As,
  Assign,
  Block,
  Colon,
  Comma,
  Dot,
  DotDot,
  Ellipsis,
  Else,
  Enum,
  EqEq,
  Extends,
  False,
  FloatLit,
  Fn,
  For,
  Greater,
  GreaterEq,
  Identifier,
  If,
  Import,
  In,
  IntLit,
  KEYWORDS,
  LBrace,
  LBracket,
  Less,
  LessEq,
  Let,
  LParen,
  Minus,
  Model,
  Not,
  NotEq,
  Or,
  Percent,
  Plus,
  RBrace,
  RBracket,
  Return,
  RParen,
  Slash,
  Star,
  StarStar,
  StringLit,
  Then,
  True,
  tokenize,
} from './lexer.ts';
import type {
  Arg,
  BinaryOp,
  BlockDecl,
  Dim,
  Expr,
  FnDecl,
  FreezePath,
  FreezeSegment,
  ImportDecl,
  ModelDecl,
  Name,
  ParamDecl,
  Range,
  SourceFile,
  Stmt,
  TopDecl,
  TrainEntry,
  TypeExpr,
} from './ast.ts';

/** A syntax problem, located; `hint` is optional advice. */
export interface SyntaxProblem {
  message: string;
  range: Range;
  hint?: string;
}

export const MAX_NESTING = 200;

const TOP_STARTERS = new Set<TokenType>([Import, Block, Fn, Model]);
/** Tokens that can be a segment of a state name in a freeze path: names and reserved words. */
const STATE_NAME_TOKENS: TokenType[] = [Identifier, ...KEYWORDS];

// tsx compiles with esbuild's keepNames: a function written where JavaScript infers a name
// (`{ ALT: () => ... }`) is wrapped in a call that defines its `name` property each time the
// expression runs, which made parsing about three times slower. The alternatives and gated
// repetitions that rules build on every call are made by these helpers instead (a function
// passed as an argument gets no name).
function alt<T>(f: () => T, gate?: () => boolean): IOrAlt<T> {
  return gate ? { GATE: gate, ALT: f } : { ALT: f };
}

function gated<T>(gate: () => boolean, def: () => T): DSLMethodOpts<T> {
  return { GATE: gate, DEF: def };
}

function describe(t: IToken): string {
  if (t.tokenType === EOF) return 'end of file';
  if (t.tokenType === Identifier) return `'${t.image}'`;
  if (t.tokenType === IntLit || t.tokenType === FloatLit) return `number ${t.image}`;
  if (t.tokenType === StringLit) return `string ${t.image}`;
  return `'${t.image}'`;
}

class LovtParser extends EmbeddedActionsParser {
  file = '';

  /** `validate`: run Chevrotain's grammar validations (checkGrammar() and the tests do; they cost ~40% of construction). */
  constructor(validate = false) {
    super(ALL_TOKENS, { maxLookahead: 3, recoveryEnabled: false, skipValidations: !validate });
    this.performSelfAnalysis();
  }

  // ------------------------------------------------------------ range helpers

  tokRange(t: IToken): Range {
    return {
      file: this.file,
      line: t.startLine ?? 1,
      col: t.startColumn ?? 1,
      endLine: t.endLine ?? t.startLine ?? 1,
      endCol: (t.endColumn ?? t.startColumn ?? 0) + 1,
    };
  }

  spanTok(a: IToken, b: IToken): Range {
    const r = this.tokRange(a);
    const e = this.tokRange(b);
    return { ...r, endLine: e.endLine, endCol: e.endCol };
  }

  spanR(a: Range, b: Range): Range {
    return { file: a.file, line: a.line, col: a.col, endLine: b.endLine, endCol: b.endCol };
  }

  nameOf(t: IToken): Name {
    return { name: t.image, range: this.tokRange(t) };
  }

  isWord(word: string, next?: TokenType[]): boolean {
    const t = this.LA(1);
    if (t.tokenType !== Identifier || t.image !== word) return false;
    return !next || next.includes(this.LA(2).tokenType);
  }

  // -------------------------------------------------------------- top level

  public topDecl = this.RULE('topDecl', (): TopDecl =>
    this.OR([
      alt(() => this.SUBRULE(this.importDecl)),
      alt(() => this.SUBRULE(this.blockDecl)),
      alt(() => this.SUBRULE(this.fnDecl)),
      alt(() => this.SUBRULE(this.modelDecl)),
    ]),
  );

  private importDecl = this.RULE('importDecl', (): ImportDecl => {
    const kw = this.CONSUME(Import);
    const s = this.CONSUME(StringLit);
    return this.ACTION(() => ({ kind: 'Import', path: unquote(s.image), range: this.spanTok(kw, s) }) as ImportDecl);
  });

  private blockDecl = this.RULE('blockDecl', (): BlockDecl => {
    const kw = this.CONSUME(Block);
    const name = this.CONSUME(Identifier);
    const params = this.SUBRULE(this.paramList);
    const { body, end } = this.SUBRULE(this.body);
    return this.ACTION(() => ({ kind: 'Block', name: this.nameOf(name), params, body, range: this.spanTok(kw, end) }) as BlockDecl);
  });

  private modelDecl = this.RULE('modelDecl', (): ModelDecl => {
    const kw = this.CONSUME(Model);
    const name = this.CONSUME(Identifier);
    let parent: IToken | undefined;
    this.OPTION(() => {
      this.CONSUME(Extends);
      parent = this.CONSUME2(Identifier);
    });
    const { body, end } = this.SUBRULE(this.body);
    return this.ACTION(
      () => ({ kind: 'Model', name: this.nameOf(name), parent: parent ? this.nameOf(parent) : undefined, body, range: this.spanTok(kw, end) }) as ModelDecl,
    );
  });

  private fnDecl = this.RULE('fnDecl', (): FnDecl => {
    const kw = this.CONSUME(Fn);
    const name = this.CONSUME(Identifier);
    const params = this.SUBRULE(this.paramList);
    let returnType: TypeExpr | undefined;
    this.OPTION(() => {
      this.CONSUME(Arrow);
      returnType = this.SUBRULE(this.typeExpr);
    });
    const { body, end } = this.SUBRULE(this.body);
    return this.ACTION(() => ({ kind: 'Fn', name: this.nameOf(name), params, returnType, body, range: this.spanTok(kw, end) }) as FnDecl);
  });

  private paramList = this.RULE('paramList', (): ParamDecl[] => {
    const params: ParamDecl[] = [];
    this.CONSUME(LParen);
    this.OPTION(() => {
      params.push(this.SUBRULE(this.paramDecl));
      this.MANY(
        gated(
          () => this.LA(2).tokenType !== RParen,
          () => {
            this.CONSUME(Comma);
            params.push(this.SUBRULE2(this.paramDecl));
          },
        ),
      );
      this.OPTION2(() => this.CONSUME2(Comma));
    });
    this.CONSUME(RParen);
    return params;
  });

  private paramDecl = this.RULE('paramDecl', (): ParamDecl => {
    const name = this.CONSUME(Identifier);
    let type: TypeExpr | undefined;
    let def: Expr | undefined;
    this.OPTION(() => {
      this.CONSUME(Colon);
      type = this.SUBRULE(this.typeExpr);
    });
    this.OPTION2(() => {
      this.CONSUME(Assign);
      def = this.SUBRULE(this.expr);
    });
    return this.ACTION(() => {
      const r = this.nameOf(name).range;
      const last = def?.range ?? type?.range ?? r;
      return { name: this.nameOf(name), type, default: def, range: this.spanR(r, last) };
    });
  });

  private body = this.RULE('body', (): { body: Stmt[]; end: IToken } => {
    const body: Stmt[] = [];
    this.CONSUME(LBrace);
    this.MANY(() => body.push(this.SUBRULE(this.stmt)));
    const end = this.CONSUME(RBrace);
    return { body, end };
  });

  // ------------------------------------------------------------------- types

  public typeExpr = this.RULE('typeExpr', (): TypeExpr =>
    this.OR([
      alt(() => {
        const kw = this.CONSUME(Enum);
        this.CONSUME(LParen);
        const members: Name[] = [];
        const first = this.CONSUME(Identifier);
        this.ACTION(() => members.push(this.nameOf(first)));
        this.MANY(() => {
          this.CONSUME(Comma);
          const m = this.CONSUME2(Identifier);
          this.ACTION(() => members.push(this.nameOf(m)));
        });
        const end = this.CONSUME(RParen);
        return this.ACTION(() => ({ kind: 'EnumType', members, range: this.spanTok(kw, end) }) as TypeExpr);
      }),
      alt(() => {
        const open = this.CONSUME2(LParen);
        const items: TypeExpr[] = [this.SUBRULE(this.typeExpr)];
        this.MANY2(() => {
          this.CONSUME2(Comma);
          items.push(this.SUBRULE2(this.typeExpr));
        });
        const end = this.CONSUME2(RParen);
        return this.ACTION(() => ({ kind: 'TupleType', items, range: this.spanTok(open, end) }) as TypeExpr);
      }),
      alt(() => {
        const name = this.CONSUME3(Identifier);
        let dims: Dim[] | undefined;
        let end: IToken = name;
        this.OPTION(() => {
          this.CONSUME(LBracket);
          dims = [];
          this.OPTION2(() => {
            dims!.push(this.SUBRULE(this.dim));
            this.MANY3(() => {
              this.CONSUME3(Comma);
              dims!.push(this.SUBRULE2(this.dim));
            });
          });
          end = this.CONSUME(RBracket);
        });
        return this.ACTION(() => makeType(name.image, dims, this.spanTok(name, end)));
      }),
    ]),
  );

  private dim = this.RULE('dim', (): Dim =>
    this.OR([
      alt(() => {
        const t = this.CONSUME(Ellipsis);
        return this.ACTION(() => ({ kind: 'Ellipsis', range: this.tokRange(t) }) as Dim);
      }),
      alt(() => {
        const e = this.SUBRULE(this.expr);
        return this.ACTION(() => ({ kind: 'DimExpr', expr: e, range: e.range }) as Dim);
      }),
    ]),
  );

  // -------------------------------------------------------------- statements

  // One token of lookahead plus the gates: once `param NAME` is seen the statement is a
  // param declaration, so a missing ':' is reported as such.
  public stmt = this.RULE('stmt', (): Stmt =>
    this.OR({
      IGNORE_AMBIGUITIES: true,
      MAX_LOOKAHEAD: 1,
      DEF: [
        alt(() => this.SUBRULE(this.letStmt)),
        alt(() => this.SUBRULE(this.returnStmt)),
        alt(() => this.SUBRULE(this.ifStmt)),
        alt(() => this.SUBRULE(this.forStmt)),
        alt(() => this.SUBRULE(this.fnDecl)),
        alt(
          () => this.SUBRULE(this.stateStmt),
          () => this.isWord('param', [Identifier]) || this.isWord('buffer', [Identifier]),
        ),
        alt(
          () => this.SUBRULE(this.updateStmt),
          () => this.isWord('update', [Identifier]),
        ),
        alt(
          () => this.SUBRULE(this.configStmt),
          () => this.isWord('config', [Identifier]),
        ),
        alt(
          () => this.SUBRULE(this.inputStmt),
          () => this.isWord('input', [Identifier]),
        ),
        alt(
          () => this.SUBRULE(this.lossStmt),
          () => this.isWord('loss', [Identifier]),
        ),
        alt(
          () => this.SUBRULE(this.outputStmt),
          () => this.isWord('output', [Identifier]),
        ),
        alt(
          () => this.SUBRULE(this.freezeStmt),
          () => this.isWord('freeze', STATE_NAME_TOKENS),
        ),
        alt(
          () => this.SUBRULE(this.dropStmt),
          () => this.isWord('drop', [Identifier]),
        ),
        alt(
          () => this.SUBRULE(this.trainStmt),
          () => this.isWord('train', [LBrace]),
        ),
        alt(() => this.SUBRULE(this.exprStmt)),
      ],
    }),
  );

  private letStmt = this.RULE('letStmt', (): Stmt => {
    const kw = this.CONSUME(Let);
    const names: Name[] = [];
    let tuple = false;
    this.OR([
      alt(() => {
        const n = this.CONSUME(Identifier);
        this.ACTION(() => names.push(this.nameOf(n)));
      }),
      alt(() => {
        this.CONSUME(LParen);
        tuple = true;
        const n = this.CONSUME2(Identifier);
        this.ACTION(() => names.push(this.nameOf(n)));
        this.MANY(() => {
          this.CONSUME(Comma);
          const m = this.CONSUME3(Identifier);
          this.ACTION(() => names.push(this.nameOf(m)));
        });
        this.CONSUME(RParen);
      }),
    ]);
    this.CONSUME(Assign);
    const value = this.SUBRULE(this.expr);
    return this.ACTION(() => ({ kind: 'Let', names, tuple, value, range: this.spanR(this.tokRange(kw), value.range) }) as Stmt);
  });

  private returnStmt = this.RULE('returnStmt', (): Stmt => {
    const kw = this.CONSUME(Return);
    let value: Expr | undefined;
    // `return` alone must be the last statement of its { }: anything else would be read as its value.
    this.OPTION(
      gated(
        () => this.LA(1).tokenType !== RBrace,
        () => (value = this.SUBRULE(this.expr)),
      ),
    );
    return this.ACTION(() => ({ kind: 'Return', value, range: value ? this.spanR(this.tokRange(kw), value.range) : this.tokRange(kw) }) as Stmt);
  });

  private ifStmt = this.RULE('ifStmt', (): Stmt => {
    const kw = this.CONSUME(If);
    const cond = this.SUBRULE(this.expr);
    const then = this.SUBRULE(this.body);
    let elseBody: Stmt[] | undefined;
    let endRange: Range | undefined;
    this.OPTION(() => {
      this.CONSUME(Else);
      this.OR([
        alt(() => {
          const nested = this.SUBRULE(this.ifStmt);
          this.ACTION(() => {
            elseBody = [nested];
            endRange = nested.range;
          });
        }),
        alt(() => {
          const b = this.SUBRULE2(this.body);
          this.ACTION(() => {
            elseBody = b.body;
            endRange = this.tokRange(b.end);
          });
        }),
      ]);
    });
    return this.ACTION(
      () => ({ kind: 'If', cond, then: then.body, else: elseBody, range: this.spanR(this.tokRange(kw), endRange ?? this.tokRange(then.end)) }) as Stmt,
    );
  });

  private forStmt = this.RULE('forStmt', (): Stmt => {
    const kw = this.CONSUME(For);
    const v = this.CONSUME(Identifier);
    this.CONSUME(In);
    const start = this.SUBRULE(this.expr);
    let end: Expr | undefined;
    this.OPTION(() => {
      this.CONSUME(DotDot);
      end = this.SUBRULE2(this.expr);
    });
    const b = this.SUBRULE(this.body);
    return this.ACTION(
      () =>
        ({
          kind: 'For',
          variable: this.nameOf(v),
          range_: end ? { start, end } : undefined,
          iterable: end ? undefined : start,
          body: b.body,
          range: this.spanTok(kw, b.end),
        }) as Stmt,
    );
  });

  private stateStmt = this.RULE('stateStmt', (): Stmt => {
    const kw = this.CONSUME(Identifier);
    const name = this.CONSUME2(Identifier);
    this.CONSUME(Colon);
    const type = this.SUBRULE(this.typeExpr);
    let init: Expr | undefined;
    this.OPTION(() => {
      this.CONSUME(Assign);
      init = this.SUBRULE(this.expr);
    });
    return this.ACTION(
      () =>
        ({
          kind: 'State',
          state: kw.image as 'param' | 'buffer',
          name: this.nameOf(name),
          type,
          init,
          range: this.spanR(this.tokRange(kw), (init ?? type).range),
        }) as Stmt,
    );
  });

  private updateStmt = this.RULE('updateStmt', (): Stmt => {
    const kw = this.CONSUME(Identifier);
    const name = this.CONSUME2(Identifier);
    this.CONSUME(Assign);
    const value = this.SUBRULE(this.expr);
    return this.ACTION(() => ({ kind: 'Update', name: this.nameOf(name), value, range: this.spanR(this.tokRange(kw), value.range) }) as Stmt);
  });

  private configStmt = this.RULE('configStmt', (): Stmt => {
    const kw = this.CONSUME(Identifier);
    const name = this.CONSUME2(Identifier);
    let type: TypeExpr | undefined;
    let value: Expr | undefined;
    this.OPTION(() => {
      this.CONSUME(Colon);
      type = this.SUBRULE(this.typeExpr);
    });
    this.OPTION2(() => {
      this.CONSUME(Assign);
      value = this.SUBRULE(this.expr);
    });
    // `where COND`: a constraint (an identifier cannot follow an expression, so `where` here is never a call).
    let where: Expr | undefined;
    this.OPTION3(
      gated(
        () => this.isWord('where'),
        () => {
          this.CONSUME3(Identifier);
          where = this.SUBRULE2(this.expr);
        },
      ),
    );
    return this.ACTION(
      () =>
        ({
          kind: 'Config',
          name: this.nameOf(name),
          type,
          value,
          where,
          range: this.spanR(this.tokRange(kw), where?.range ?? value?.range ?? type?.range ?? this.tokRange(name)),
        }) as Stmt,
    );
  });

  private inputStmt = this.RULE('inputStmt', (): Stmt => {
    const kw = this.CONSUME(Identifier);
    const name = this.CONSUME2(Identifier);
    this.CONSUME(Colon);
    const type = this.SUBRULE(this.typeExpr);
    return this.ACTION(() => ({ kind: 'Input', name: this.nameOf(name), type, range: this.spanR(this.tokRange(kw), type.range) }) as Stmt);
  });

  private lossStmt = this.RULE('lossStmt', (): Stmt => {
    const kw = this.CONSUME(Identifier);
    const name = this.CONSUME2(Identifier);
    let args: Arg[] | undefined;
    let value: Expr | undefined;
    let end: Range | undefined;
    this.OPTION(() => {
      const a = this.SUBRULE(this.argList);
      this.ACTION(() => {
        args = a.args;
        end = this.tokRange(a.end);
      });
    });
    this.OPTION2(() => {
      this.CONSUME(Assign);
      value = this.SUBRULE(this.expr);
    });
    return this.ACTION(
      () => ({ kind: 'Loss', name: this.nameOf(name), args, value, range: this.spanR(this.tokRange(kw), value?.range ?? end ?? this.tokRange(name)) }) as Stmt,
    );
  });

  private outputStmt = this.RULE('outputStmt', (): Stmt => {
    const kw = this.CONSUME(Identifier);
    const name = this.CONSUME2(Identifier);
    this.CONSUME(Assign);
    const value = this.SUBRULE(this.expr);
    return this.ACTION(() => ({ kind: 'Output', name: this.nameOf(name), value, range: this.spanR(this.tokRange(kw), value.range) }) as Stmt);
  });

  private freezeStmt = this.RULE('freezeStmt', (): Stmt => {
    const kw = this.CONSUME(Identifier);
    const paths: FreezePath[] = [this.SUBRULE(this.freezePath)];
    this.MANY(() => {
      this.CONSUME(Comma);
      paths.push(this.SUBRULE2(this.freezePath));
    });
    return this.ACTION(() => ({ kind: 'Freeze', paths, range: this.spanR(this.tokRange(kw), paths[paths.length - 1].range) }) as Stmt);
  });

  private freezePath = this.RULE('freezePath', (): FreezePath => {
    const segments: FreezeSegment[] = [this.SUBRULE(this.freezeSegment)];
    this.MANY(() => {
      this.CONSUME(Dot);
      segments.push(this.SUBRULE2(this.freezeSegment));
    });
    return this.ACTION(() => {
      const first = segments[0];
      const last = segments[segments.length - 1];
      return { segments, range: this.spanR(first.name.range, last.index?.range ?? last.name.range) };
    });
  });

  // `name`, `name[i]` or `name[a..b]`; i, a and b are compile-time int expressions. The name is
  // a state-name segment, so reserved words are allowed (`as "model"` gives state model.*).
  private freezeSegment = this.RULE('freezeSegment', (): FreezeSegment => {
    const name = this.OR(this.tokenAlternatives(STATE_NAME_TOKENS));
    let index: FreezeSegment['index'];
    this.OPTION(() => {
      const open = this.CONSUME(LBracket);
      const a = this.SUBRULE(this.expr);
      let b: Expr | undefined;
      this.OPTION2(() => {
        this.CONSUME(DotDot);
        b = this.SUBRULE2(this.expr);
      });
      const close = this.CONSUME(RBracket);
      this.ACTION(() => {
        index = { start: a, end: b, range: this.spanTok(open, close) };
      });
    });
    return this.ACTION(() => ({ name: this.nameOf(name), index }));
  });

  private dropStmt = this.RULE('dropStmt', (): Stmt => {
    const kw = this.CONSUME(Identifier);
    const what = this.CONSUME2(Identifier);
    const names: Name[] = [];
    this.OPTION(
      gated(
        () => what.image !== 'freeze',
        () => {
          const n = this.CONSUME3(Identifier);
          this.ACTION(() => names.push(this.nameOf(n)));
          this.MANY(() => {
            this.CONSUME(Comma);
            const m = this.CONSUME4(Identifier);
            this.ACTION(() => names.push(this.nameOf(m)));
          });
        },
      ),
    );
    return this.ACTION(() => {
      if (!['loss', 'output', 'freeze'].includes(what.image))
        this.assignProblems.push({ message: `drop expects 'loss', 'output' or 'freeze', found '${what.image}'`, range: this.tokRange(what) });
      const end = names.length ? names[names.length - 1].range : this.tokRange(what);
      return { kind: 'Drop', what: what.image as 'loss', names, range: this.spanR(this.tokRange(kw), end), whatRange: this.tokRange(what) } as Stmt;
    });
  });

  private trainStmt = this.RULE('trainStmt', (): Stmt => {
    const kw = this.CONSUME(Identifier);
    this.CONSUME(LBrace);
    const entries: TrainEntry[] = [];
    this.MANY(() => {
      const key: Name[] = [];
      const first = this.CONSUME2(Identifier);
      this.ACTION(() => key.push(this.nameOf(first)));
      this.MANY2(() => {
        this.CONSUME(Dot);
        const k = this.CONSUME3(Identifier);
        this.ACTION(() => key.push(this.nameOf(k)));
      });
      this.CONSUME(Assign);
      const value = this.SUBRULE(this.expr);
      this.ACTION(() => entries.push({ key, value, range: this.spanR(key[0].range, value.range) }));
    });
    const end = this.CONSUME(RBrace);
    return this.ACTION(() => ({ kind: 'Train', entries, range: this.spanTok(kw, end) }) as Stmt);
  });

  // `expr`, `name = expr`, `name[i] = expr`, and a sub-module's state key: `name = Block(...) as KEY`.
  private exprStmt = this.RULE('exprStmt', (): Stmt => {
    const lhs = this.SUBRULE(this.expr);
    let value: Expr | undefined;
    let key: Expr | undefined;
    this.OPTION(() => {
      this.CONSUME(Assign);
      value = this.SUBRULE2(this.expr);
      this.OPTION2(() => {
        this.CONSUME(As);
        key = this.SUBRULE3(this.expr);
      });
    });
    return this.ACTION((): Stmt => {
      if (!value) return { kind: 'ExprStmt', expr: lhs, range: lhs.range };
      const range = this.spanR(lhs.range, (key ?? value).range);
      if (lhs.kind === 'Ident') return { kind: 'Assign', target: { name: lhs.name, range: lhs.range }, value, key, range };
      if (lhs.kind === 'Index' && lhs.object.kind === 'Ident')
        return { kind: 'Assign', target: { name: lhs.object.name, range: lhs.object.range }, index: lhs.index, value, key, range };
      this.assignProblems.push({ message: 'the left side of = must be a name or name[index]', range: lhs.range });
      return { kind: 'ExprStmt', expr: value, range };
    });
  });

  assignProblems: SyntaxProblem[] = [];

  // ------------------------------------------------------------- expressions

  public expr = this.RULE('expr', (): Expr => this.OR([alt(() => this.SUBRULE(this.condExpr)), alt(() => this.SUBRULE(this.orExpr))]));

  private condExpr = this.RULE('condExpr', (): Expr => {
    const kw = this.CONSUME(If);
    const cond = this.SUBRULE(this.expr);
    this.CONSUME(Then);
    const then = this.SUBRULE2(this.expr);
    this.CONSUME(Else);
    const other = this.SUBRULE3(this.expr);
    return this.ACTION(() => ({ kind: 'Cond', cond, then, else: other, range: this.spanR(this.tokRange(kw), other.range) }) as Expr);
  });

  // One alternative per token type, made once per list (they capture nothing but the token type).
  private readonly tokenAlts = new Map<TokenType[], IOrAlt<IToken>[]>();
  private tokenAlternatives(types: TokenType[]): IOrAlt<IToken>[] {
    let alts = this.tokenAlts.get(types);
    if (!alts) this.tokenAlts.set(types, (alts = types.map((t) => alt(() => this.CONSUME(t)))));
    return alts;
  }

  private binaryChain(first: () => Expr, rest: () => Expr, ops: TokenType[]): Expr {
    // Left-associative chain `operand (op operand)*` shared by the or/and/+/* levels.
    let left = first();
    this.MANY(() => {
      const op = this.OR(this.tokenAlternatives(ops));
      const right = rest();
      this.ACTION(() => {
        left = { kind: 'Binary', op: op.image as BinaryOp, left, right, opRange: this.tokRange(op), range: this.spanR(left.range, right.range) };
      });
    });
    return left;
  }

  private orExpr = this.RULE('orExpr', (): Expr =>
    this.binaryChain(
      () => this.SUBRULE(this.andExpr),
      () => this.SUBRULE2(this.andExpr),
      [Or],
    ),
  );
  private andExpr = this.RULE('andExpr', (): Expr =>
    this.binaryChain(
      () => this.SUBRULE(this.notExpr),
      () => this.SUBRULE2(this.notExpr),
      [And],
    ),
  );

  private notExpr = this.RULE('notExpr', (): Expr =>
    this.OR([
      alt(() => {
        const kw = this.CONSUME(Not);
        const operand = this.SUBRULE(this.notExpr);
        return this.ACTION(() => ({ kind: 'Unary', op: 'not', operand, range: this.spanR(this.tokRange(kw), operand.range) }) as Expr);
      }),
      alt(() => this.SUBRULE(this.cmpExpr)),
    ]),
  );

  private cmpExpr = this.RULE('cmpExpr', (): Expr => {
    let left = this.SUBRULE(this.addExpr);
    this.OPTION(() => {
      const op = this.OR([
        alt(() => this.CONSUME(EqEq)),
        alt(() => this.CONSUME(NotEq)),
        alt(() => this.CONSUME(LessEq)),
        alt(() => this.CONSUME(GreaterEq)),
        alt(() => this.CONSUME(Less)),
        alt(() => this.CONSUME(Greater)),
      ]);
      const right = this.SUBRULE2(this.addExpr);
      this.ACTION(() => {
        left = { kind: 'Binary', op: op.image as BinaryOp, left, right, opRange: this.tokRange(op), range: this.spanR(left.range, right.range) };
      });
    });
    return left;
  });

  private addExpr = this.RULE('addExpr', (): Expr =>
    this.binaryChain(
      () => this.SUBRULE(this.mulExpr),
      () => this.SUBRULE2(this.mulExpr),
      [Plus, Minus],
    ),
  );
  private mulExpr = this.RULE('mulExpr', (): Expr =>
    this.binaryChain(
      () => this.SUBRULE(this.unaryExpr),
      () => this.SUBRULE2(this.unaryExpr),
      [Star, Slash, Percent],
    ),
  );

  private unaryExpr = this.RULE('unaryExpr', (): Expr =>
    this.OR([
      alt(() => {
        const kw = this.CONSUME(Minus);
        const operand = this.SUBRULE(this.unaryExpr);
        return this.ACTION(() => {
          // Fold `-literal` so that `-1` is an int literal (used in shapes and axes).
          if (operand.kind === 'Num') return { ...operand, value: -operand.value, range: this.spanR(this.tokRange(kw), operand.range) } as Expr;
          return { kind: 'Unary', op: '-', operand, range: this.spanR(this.tokRange(kw), operand.range) } as Expr;
        });
      }),
      alt(() => this.SUBRULE(this.powExpr)),
    ]),
  );

  private powExpr = this.RULE('powExpr', (): Expr => {
    let left = this.SUBRULE(this.postfixExpr);
    this.OPTION(() => {
      const op = this.CONSUME(StarStar);
      const right = this.SUBRULE(this.unaryExpr);
      this.ACTION(() => {
        left = { kind: 'Binary', op: '**', left, right, opRange: this.tokRange(op), range: this.spanR(left.range, right.range) };
      });
    });
    return left;
  });

  private postfixExpr = this.RULE('postfixExpr', (): Expr => {
    let e = this.SUBRULE(this.atom);
    this.MANY(() =>
      this.OR([
        alt(() => {
          const a = this.SUBRULE(this.argList);
          this.ACTION(() => {
            e = { kind: 'Call', callee: e, args: a.args, range: this.spanR(e.range, this.tokRange(a.end)) };
          });
        }),
        alt(() => {
          this.CONSUME(Dot);
          const n = this.CONSUME(Identifier);
          this.ACTION(() => {
            e = { kind: 'Member', object: e, name: this.nameOf(n), range: this.spanR(e.range, this.tokRange(n)) };
          });
        }),
        alt(() => {
          this.CONSUME(LBracket);
          const index = this.SUBRULE(this.expr);
          const end = this.CONSUME(RBracket);
          this.ACTION(() => {
            e = { kind: 'Index', object: e, index, range: this.spanR(e.range, this.tokRange(end)) };
          });
        }),
      ]),
    );
    return e;
  });

  private argList = this.RULE('argList', (): { args: Arg[]; end: IToken } => {
    const args: Arg[] = [];
    this.CONSUME(LParen);
    this.OPTION(() => {
      args.push(this.SUBRULE(this.arg));
      this.MANY(
        gated(
          () => this.LA(2).tokenType !== RParen,
          () => {
            this.CONSUME(Comma);
            args.push(this.SUBRULE2(this.arg));
          },
        ),
      );
      this.OPTION2(() => this.CONSUME2(Comma));
    });
    const end = this.CONSUME(RParen);
    return { args, end };
  });

  private arg = this.RULE('arg', (): Arg =>
    this.OR([
      alt(
        () => {
          const n = this.CONSUME(Identifier);
          this.CONSUME(Colon);
          const value = this.SUBRULE(this.expr);
          return this.ACTION(() => ({ name: this.nameOf(n), value, range: this.spanR(this.tokRange(n), value.range) }));
        },
        () => this.LA(2).tokenType === Colon,
      ),
      alt(() => {
        const value = this.SUBRULE2(this.expr);
        return this.ACTION(() => ({ value, range: value.range }));
      }),
    ]),
  );

  private atom = this.RULE('atom', (): Expr =>
    this.OR([
      alt(() => {
        const t = this.CONSUME(IntLit);
        return this.ACTION(() => ({ kind: 'Num', value: Number(t.image), isInt: true, range: this.tokRange(t) }) as Expr);
      }),
      alt(() => {
        const t = this.CONSUME(FloatLit);
        return this.ACTION(() => ({ kind: 'Num', value: Number(t.image), isInt: false, range: this.tokRange(t) }) as Expr);
      }),
      alt(() => {
        const t = this.CONSUME(StringLit);
        return this.ACTION(() => ({ kind: 'Str', value: unquote(t.image), range: this.tokRange(t) }) as Expr);
      }),
      alt(() => {
        const t = this.CONSUME(True);
        return this.ACTION(() => ({ kind: 'Bool', value: true, range: this.tokRange(t) }) as Expr);
      }),
      alt(() => {
        const t = this.CONSUME(False);
        return this.ACTION(() => ({ kind: 'Bool', value: false, range: this.tokRange(t) }) as Expr);
      }),
      alt(() => {
        const t = this.CONSUME(Identifier);
        return this.ACTION(() => ({ kind: 'Ident', name: t.image, range: this.tokRange(t) }) as Expr);
      }),
      alt(() => {
        const open = this.CONSUME(LBracket);
        const items: Expr[] = [];
        this.OPTION(() => {
          items.push(this.SUBRULE(this.expr));
          this.MANY(
            gated(
              () => this.LA(2).tokenType !== RBracket,
              () => {
                this.CONSUME(Comma);
                items.push(this.SUBRULE2(this.expr));
              },
            ),
          );
          this.OPTION2(() => this.CONSUME2(Comma));
        });
        const end = this.CONSUME(RBracket);
        return this.ACTION(() => ({ kind: 'List', items, range: this.spanTok(open, end) }) as Expr);
      }),
      alt(() => {
        const open = this.CONSUME(LParen);
        const items: Expr[] = [this.SUBRULE3(this.expr)];
        this.MANY2(() => {
          this.CONSUME3(Comma);
          items.push(this.SUBRULE4(this.expr));
        });
        const end = this.CONSUME(RParen);
        return this.ACTION(() => {
          if (items.length === 1) return { ...items[0], range: this.spanTok(open, end) } as Expr;
          return { kind: 'Tuple', items, range: this.spanTok(open, end) } as Expr;
        });
      }),
    ]),
  );
}

function unquote(s: string): string {
  const body = s.slice(1, -1);
  return body.replace(/\\(.)/g, (_m, c: string) => (c === 'n' ? '\n' : c === 't' ? '\t' : c));
}

const TENSOR_DTYPES = new Set(['f32', 'i32']);
const VALUE_TYPES = new Set(['int', 'float', 'bool', 'string']);

function makeType(name: string, dims: Dim[] | undefined, range: Range): TypeExpr {
  if (TENSOR_DTYPES.has(name)) {
    // `f32` without brackets: any shape.
    return { kind: 'TensorType', dtype: name as 'f32', dims: dims ?? [{ kind: 'Ellipsis', range }], range };
  }
  if (VALUE_TYPES.has(name) && (!dims || dims.length === 0)) return { kind: 'ValueType', name: name as 'int', list: !!dims, range };
  return { kind: 'UnknownType', name, range };
}

/**
 * Builds the parser with Chevrotain's grammar validations (ambiguous alternatives, left
 * recursion, duplicate occurrence indices, ...); throws on a grammar definition error. The
 * shared instance that parses files skips them; the parser tests run this.
 */
export function checkGrammar(): void {
  new LovtParser(true);
}

let shared: LovtParser | undefined;
function parserInstance(): LovtParser {
  shared ??= new LovtParser();
  return shared;
}

/** Splits the token stream into top-level declarations (at import/block/fn/model outside brackets). */
function splitDeclarations(tokens: IToken[]): IToken[][] {
  const chunks: IToken[][] = [];
  let current: IToken[] = [];
  let depth = 0;
  for (const t of tokens) {
    // A declaration keyword at depth 0, or at the start of a line (an unclosed bracket
    // above must not swallow the rest of the file), starts a new declaration.
    if (TOP_STARTERS.has(t.tokenType) && current.length > 0 && (depth === 0 || t.startColumn === 1)) {
      chunks.push(current);
      current = [];
      depth = 0;
    }
    current.push(t);
    if (t.tokenType === LParen || t.tokenType === LBracket || t.tokenType === LBrace) depth++;
    else if (t.tokenType === RParen || t.tokenType === RBracket || t.tokenType === RBrace) depth = Math.max(0, depth - 1);
  }
  if (current.length) chunks.push(current);
  return chunks;
}

export interface ParseResult {
  file: SourceFile;
  problems: SyntaxProblem[];
}

function pointRange(file: string, line: number, col: number, length = 1): Range {
  return { file, line, col, endLine: line, endCol: col + length };
}

/** Parses one .lovt file. Never throws: every problem is returned, located. */
export function parseLovt(text: string, path: string): ParseResult {
  const problems: SyntaxProblem[] = [];
  const lex = tokenize(text);
  for (const e of lex.errors) problems.push({ message: e.message, range: pointRange(path, e.line, e.col, e.length) });
  const decls: TopDecl[] = [];
  const parser = parserInstance();
  parser.file = path;
  for (const chunk of splitDeclarations(lex.tokens)) {
    const nesting = checkNesting(chunk, path);
    if (nesting) {
      problems.push(nesting);
      continue;
    }
    parser.assignProblems = [];
    parser.input = chunk;
    let decl: TopDecl | undefined;
    try {
      decl = parser.topDecl();
    } catch (e) {
      if (!(e instanceof RangeError)) throw e;
      problems.push({ message: 'expression nested too deeply', range: parser.tokRange(chunk[0]) });
      continue;
    }
    problems.push(...parser.assignProblems);
    if (parser.errors.length > 0) {
      // After a lexer error in this declaration the parse error is usually its echo.
      const first = chunk[0].startLine ?? 1;
      const last = chunk[chunk.length - 1].endLine ?? first;
      if (!lex.errors.some((e) => e.line >= first && e.line <= last)) problems.push(syntaxProblem(parser.errors[0], chunk, path));
      continue;
    }
    if (decl) decls.push(decl);
  }
  return { file: { path, text, decls }, problems };
}

/** Bracket nesting deeper than MAX_NESTING is refused before parsing (recursion is bounded). */
function checkNesting(tokens: IToken[], path: string): SyntaxProblem | undefined {
  let depth = 0;
  let prefixRun = 0;
  for (const t of tokens) {
    if (t.tokenType === LParen || t.tokenType === LBracket || t.tokenType === LBrace) depth++;
    else if (t.tokenType === RParen || t.tokenType === RBracket || t.tokenType === RBrace) depth = Math.max(0, depth - 1);
    // Runs of prefix operators and `if` nest the same way brackets do.
    prefixRun = t.tokenType === Minus || t.tokenType === Not || t.tokenType === If || t.tokenType === StarStar ? prefixRun + 1 : 0;
    if (depth > MAX_NESTING || prefixRun > MAX_NESTING)
      return { message: `nesting deeper than ${MAX_NESTING} levels`, range: pointRange(path, t.startLine ?? 1, t.startColumn ?? 1, t.image.length) };
  }
  return undefined;
}

interface ChevError {
  name: string;
  message: string;
  token: IToken;
  previousToken?: IToken;
}

function syntaxProblem(err: ChevError, chunk: IToken[], path: string): SyntaxProblem {
  const t = err.token;
  const atEnd = t.tokenType === EOF || t.startLine === undefined || Number.isNaN(t.startLine);
  const anchor = atEnd ? (err.previousToken && !Number.isNaN(err.previousToken.startLine) ? err.previousToken : chunk[chunk.length - 1]) : t;
  let range = {
    ...(atEnd ? pointRange(path, anchor.endLine ?? 1, (anchor.endColumn ?? 0) + 1) : pointRange(path, t.startLine ?? 1, t.startColumn ?? 1, t.image.length)),
  };
  const found = atEnd ? 'end of file' : describe(t);
  let message: string;
  let hint: string | undefined;
  if (err.name === 'NotAllInputParsedException') {
    message = `unexpected ${found} after the end of this declaration`;
    hint = 'a file holds import, block, fn and model declarations';
  } else if (err.name === 'MismatchedTokenException') {
    const m = /Expecting token of type --> (\w+) <--/.exec(err.message);
    const expected = m ? tokenText(m[1]) : 'something else';
    message = `expected ${expected} but found ${found}`;
  } else {
    // NoViableAlt / EarlyExit: name the possible next tokens when there are few.
    const firsts = [...new Set([...err.message.matchAll(/^\s*\d+\. \[(\w+)/gm)].map((m) => tokenText(m[1])))];
    message = firsts.length > 0 && firsts.length <= 4 ? `expected ${firsts.join(' or ')} but found ${found}` : `unexpected ${found}`;
  }
  const before = chunk.filter((c) => c.startOffset <= t.startOffset || atEnd);
  if (before.some((c) => c.tokenType === Identifier && c.image === 'elif')) hint = "write 'else if'";
  if (!atEnd && [Less, LessEq, Greater, GreaterEq, EqEq, NotEq].includes(t.tokenType)) hint = 'comparisons do not chain: write a < b and b < c';
  if (!atEnd && t.tokenType !== Identifier && /^[a-z]+$/.test(t.image) && found.startsWith("'"))
    hint = `'${t.image}' is a reserved word and cannot be used as a name`;
  // `as` right after an expression: a state key where none is allowed (`let x = B() as 0`).
  const endsExpr = [RParen, RBracket, Identifier, IntLit, FloatLit, StringLit, True, False];
  if (!atEnd && t.tokenType === As && before.length >= 2 && endsExpr.includes(before[before.length - 2].tokenType))
    hint = "'as KEY' follows a sub-module declaration NAME = Block(...) at block or model level";
  if (err.name === 'NoViableAltException' && !atEnd && t.tokenType === RBrace) message = `unexpected '}'`;
  range = { ...range };
  return { message, range, hint };
}

const TOKEN_TEXT: Record<string, string> = {
  Identifier: 'a name',
  IntLit: 'an integer',
  FloatLit: 'a number',
  StringLit: 'a string',
  Arrow: "'->'",
  Ellipsis: "'...'",
  DotDot: "'..'",
  Dot: "'.'",
  EqEq: "'=='",
  NotEq: "'!='",
  LessEq: "'<='",
  GreaterEq: "'>='",
  Less: "'<'",
  Greater: "'>'",
  Assign: "'='",
  StarStar: "'**'",
  Star: "'*'",
  Slash: "'/'",
  Percent: "'%'",
  Plus: "'+'",
  Minus: "'-'",
  LParen: "'('",
  RParen: "')'",
  LBracket: "'['",
  RBracket: "']'",
  LBrace: "'{'",
  RBrace: "'}'",
  Comma: "','",
  Colon: "':'",
  EOF: 'end of file',
};

function tokenText(name: string): string {
  return TOKEN_TEXT[name] ?? `'${name.toLowerCase()}'`;
}

/** Parses a single expression (a `--set` value). Returns the problem instead when it does not parse. */
export function parseExpression(text: string, path: string): { expr?: Expr; problem?: SyntaxProblem } {
  const lex = tokenize(text);
  if (lex.errors.length) return { problem: { message: lex.errors[0].message, range: pointRange(path, lex.errors[0].line, lex.errors[0].col) } };
  const nesting = checkNesting(lex.tokens, path);
  if (nesting) return { problem: nesting };
  const parser = parserInstance();
  parser.file = path;
  parser.input = lex.tokens;
  let expr: Expr | undefined;
  try {
    expr = parser.expr();
  } catch (e) {
    if (!(e instanceof RangeError)) throw e;
    return { problem: { message: 'expression nested too deeply', range: pointRange(path, 1, 1) } };
  }
  if (parser.errors.length) return { problem: syntaxProblem(parser.errors[0], lex.tokens, path) };
  if (lex.tokens.length === 0 || !expr) return { problem: { message: 'empty expression', range: pointRange(path, 1, 1) } };
  return { expr };
}
