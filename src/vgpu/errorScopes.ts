// A virtual device's error scopes and uncaptured-error event. Errors of a call land in the scope
// that was innermost-matching when the program made the call, even when the kernel runs the call
// later: the call captures a `ErrorTarget` (the stack as it was), and every scope in it waits for
// the call's outcome before its popErrorScope resolves.

import { ErrorCodes, GpunixError } from '../errors.js';
import { ERROR_FILTERS, enumValue } from '../webidl.js';

type Filter = 'validation' | 'out-of-memory' | 'internal';

interface Scope {
  filter: Filter;
  error: GPUError | null;
  pending: Promise<unknown>[];
}

/** Where a call's errors go: the scope stack as it stood when the program made the call. */
export type ErrorTarget = readonly Scope[];

/**
 * An ErrorTarget for a call the kernel makes later: its scopes' pops wait until the call's errors
 * are routed and `release()` is called, or `release()` alone says the call will never be made.
 */
export interface HeldTarget {
  readonly scopes: ErrorTarget;
  release(): void;
}

const NOTHING_HELD: HeldTarget = { scopes: [], release: () => {} };

function filterOf(error: GPUError): Filter {
  const name = error.constructor?.name ?? '';
  if (name === 'GPUOutOfMemoryError') return 'out-of-memory';
  if (name === 'GPUInternalError') return 'internal';
  return 'validation';
}

export class ErrorScopes {
  private stack: Scope[] = [];
  private readonly noScopes: ErrorTarget = [];
  /** Releases of held targets not yet released: clear() releases them all. */
  private readonly holds = new Set<() => void>();

  constructor(
    /** Delivers an error that no scope caught (the device's `uncapturederror` event). */
    private readonly uncaptured: (error: GPUError) => void,
  ) {}

  push(filter: string): void {
    const value = enumValue<Filter>(filter, ERROR_FILTERS, 'GPUErrorFilter', 'pushErrorScope', 'filter');
    this.stack.push({ filter: value, error: null, pending: [] });
  }

  async pop(): Promise<GPUError | null> {
    const scope = this.stack.pop();
    if (!scope) throw new DOMException('No error scopes to pop', 'OperationError');
    // A call made inside the scope may still be waiting for the kernel to run it.
    while (scope.pending.length > 0) {
      const pending = scope.pending;
      scope.pending = [];
      await Promise.all(pending);
    }
    return scope.error;
  }

  /** The current target; cheap when no scope is open (the common case). */
  target(): ErrorTarget {
    return this.stack.length === 0 ? this.noScopes : this.stack.slice();
  }

  /**
   * The current target, held open for a call that will run later (after other processes' work):
   * without the hold, a pop made before the call runs would miss the call's errors.
   */
  hold(): HeldTarget {
    // The held target is made apart: its closures' variables would otherwise be allocated on
    // every call, the common one with no scope open included.
    return this.stack.length === 0 ? NOTHING_HELD : this.holdScopes();
  }

  private holdScopes(): HeldTarget {
    let resolve!: () => void;
    const held = new Promise<void>((r) => (resolve = r));
    const release = (): void => {
      if (this.holds.delete(release)) resolve();
    };
    this.holds.add(release);
    const scopes = this.stack.slice();
    for (const scope of scopes) scope.pending.push(held);
    return { scopes, release };
  }

  /** Routes the errors a call will produce to `target`, holding its scopes open until they are known. */
  route(target: ErrorTarget, errors: Promise<GPUError[]>): void {
    const delivered = errors.then(
      (list) => {
        for (const error of list) this.report(target, error);
      },
      (failure) => this.report(target, internalError(failure)),
    );
    for (const scope of target) scope.pending.push(delivered);
  }

  /** Delivers one error now, as WebGPU does: the innermost scope whose filter matches, else uncaptured. */
  report(target: ErrorTarget, error: GPUError): void {
    const filter = filterOf(error);
    for (let i = target.length - 1; i >= 0; i--) {
      const scope = target[i];
      if (scope.filter !== filter) continue;
      scope.error ??= error;
      return;
    }
    this.uncaptured(error);
  }

  /**
   * The open scopes, outermost first, with the error each has caught so far (a process moving to
   * another node: its pending calls have all settled by then, so nothing is waiting on them).
   */
  exportState(): Array<{ filter: Filter; error: { type: Filter; message: string } | null }> {
    return this.stack.map((scope) => ({ filter: scope.filter, error: scope.error ? { type: filterOf(scope.error), message: scope.error.message } : null }));
  }

  /** Opens the scopes `exportState` described, with their caught errors (a process that moved here). */
  importState(state: ReadonlyArray<{ filter: string; error: { type: string; message: string } | null }>, makeError: (type: string, message: string) => GPUError): void {
    for (const { filter, error } of state) {
      this.push(filter);
      if (error) this.stack[this.stack.length - 1].error = makeError(error.type, error.message);
    }
  }

  /** Drops every open scope (device destroyed or lost: pops then resolve with no error). */
  clear(): void {
    for (const scope of this.stack) scope.pending = [];
    // Calls that will never run (or whose errors a lost device drops) must not keep pops waiting.
    for (const release of [...this.holds]) release();
  }
}

function internalError(failure: unknown): GPUError {
  const ctor = (globalThis as { GPUInternalError?: new (m: string) => GPUError }).GPUInternalError;
  const message = `gpunix: ${failure instanceof Error ? failure.message : String(failure)}`;
  if (ctor) return new ctor(message);
  return new GpunixError(ErrorCodes.SHUTDOWN, message) as unknown as GPUError;
}
