// The command encoding of FinishCommandEncoder, defined once for the client (which records) and
// the daemon (which replays). A command encoder's whole recording travels as one JSON array of
// commands, each `[method, ...args]`, in the order the program called them, passes included:
//
//   [["beginComputePass", {"label": "work", "timestampWrites": {"querySet": {"$ref": 7}, ...}}],
//    ["setPipeline", {"$ref": 4}], ["setBindGroup", 0, {"$ref": 5}, [256, 0]],
//    ["dispatchWorkgroups", 4, 1, 1], ["end"],
//    ["copyBufferToBuffer", {"$ref": 2}, 0, {"$ref": 3}, 0, 64]]
//
// Objects are `{"$ref": id}`, as in descriptors. A command applies to the current target: the
// encoder at first, the pass a `beginComputePass` opens until that pass's `end`. A program that
// calls another object than the current target (the encoder while its pass is open, a pass after
// its end) is recorded with a selector first: `["$pass", k]` (the k-th pass this encoder began,
// from 0) or `["$encoder"]`, so the daemon replays every call on the object the program used and
// Dawn reports exactly the errors it would have. Arguments are normalized by the client (WebIDL
// conversions done, optional trailing arguments left out, dynamic offsets as a plain array,
// immediate data as an array of bytes), so each has one kind, checked on both sides.

/** The kind of one command argument on the wire. */
export type ArgKind =
  /** integer in [0, 2^32) */
  | 'u32'
  /** integer in [0, 2^53) */
  | 'u64'
  | 'str'
  /** {"$ref": id} of that kind of object */
  | 'buffer'
  | 'querySet'
  | 'computePipeline'
  /** {"$ref": id} of a bind group, or null */
  | 'bindGroup?'
  /** array of u32 (dynamic offsets) */
  | 'u32[]'
  /** array of integers in [0, 256) (immediate data) */
  | 'bytes'
  /** a compute pass descriptor (with `$ref`s), or null */
  | 'passDescriptor';

export interface CommandSpec {
  /** Which object the method belongs to. */
  readonly target: 'encoder' | 'pass';
  /** Accepted argument lists (overloads); an argument kind ending in `=` may be left out, from the end. */
  readonly overloads: readonly (readonly string[])[];
}

export const COMMANDS = {
  beginComputePass: { target: 'encoder', overloads: [['passDescriptor=']] },
  copyBufferToBuffer: {
    target: 'encoder',
    overloads: [
      ['buffer', 'u64', 'buffer', 'u64', 'u64='],
      ['buffer', 'buffer', 'u64='],
    ],
  },
  clearBuffer: { target: 'encoder', overloads: [['buffer', 'u64=', 'u64=']] },
  resolveQuerySet: { target: 'encoder', overloads: [['querySet', 'u32', 'u32', 'buffer', 'u64']] },
  writeTimestamp: { target: 'encoder', overloads: [['querySet', 'u32']] },
  setPipeline: { target: 'pass', overloads: [['computePipeline']] },
  setBindGroup: { target: 'pass', overloads: [['u32', 'bindGroup?', 'u32[]=']] },
  dispatchWorkgroups: { target: 'pass', overloads: [['u32', 'u32=', 'u32=']] },
  dispatchWorkgroupsIndirect: { target: 'pass', overloads: [['buffer', 'u64']] },
  setImmediates: { target: 'pass', overloads: [['u32', 'bytes']] },
  end: { target: 'pass', overloads: [[]] },
  // Both objects have these: the current target takes them.
  pushDebugGroup: { target: 'encoder', overloads: [['str']] },
  popDebugGroup: { target: 'encoder', overloads: [[]] },
  insertDebugMarker: { target: 'encoder', overloads: [['str']] },
} as const satisfies Record<string, CommandSpec>;

export type CommandName = keyof typeof COMMANDS;

/** Methods both encoders have; recorded for whichever is the current target. */
export const DEBUG_COMMANDS: ReadonlySet<string> = new Set(['pushDebugGroup', 'popDebugGroup', 'insertDebugMarker']);

/** Selector commands: the next commands apply to another object (see the header). */
export const SELECT_PASS = '$pass';
export const SELECT_ENCODER = '$encoder';

/** One recorded command: its method and normalized arguments. */
export type Command = [string, ...unknown[]];

/** An object reference inside a command or descriptor. */
export function isRef(value: unknown): value is { $ref: number } {
  return (
    typeof value === 'object' &&
    value !== null &&
    !Array.isArray(value) &&
    Object.keys(value).length === 1 &&
    typeof (value as { $ref?: unknown }).$ref === 'number'
  );
}

/** The object kind an argument kind names, or null for plain values. */
export function refKindOf(kind: string): 'buffer' | 'querySet' | 'computePipeline' | 'bindGroup' | null {
  const base = kind.replace(/[?=]+$/, '');
  return base === 'buffer' || base === 'querySet' || base === 'computePipeline' ? base : base === 'bindGroup' ? 'bindGroup' : null;
}

/**
 * Whether `args` (a command's arguments after the method) fit one of its overloads in count and
 * in the kinds of plain values; returns that overload's kinds, or null. Object references are
 * checked by the receiver, which knows what each id names.
 */
export function matchOverload(spec: CommandSpec, args: readonly unknown[]): readonly string[] | null {
  for (const overload of spec.overloads) {
    const required = overload.filter((kind) => !kind.endsWith('=')).length;
    if (args.length < required || args.length > overload.length) continue;
    if (args.every((arg, i) => plainFits(overload[i].replace(/=$/, ''), arg))) return overload.slice(0, args.length);
  }
  return null;
}

function plainFits(kind: string, value: unknown): boolean {
  switch (kind) {
    case 'u32':
      return Number.isInteger(value) && (value as number) >= 0 && (value as number) <= 0xffffffff;
    case 'u64':
      return Number.isSafeInteger(value) && (value as number) >= 0;
    case 'str':
      return typeof value === 'string';
    case 'u32[]':
      return Array.isArray(value) && value.every((v) => plainFits('u32', v));
    case 'bytes':
      return Array.isArray(value) && value.every((v) => Number.isInteger(v) && v >= 0 && v <= 255);
    case 'passDescriptor':
      return value === null || (typeof value === 'object' && !Array.isArray(value));
    case 'bindGroup?':
      return value === null || isRef(value);
    default:
      return isRef(value);
  }
}
