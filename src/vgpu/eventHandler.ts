// An event handler IDL attribute (HTML §8.1.8.1), such as GPUDevice.onuncapturederror. Its first
// non-null value registers one listener on the target, which calls whatever the attribute holds
// when an event comes: the handler runs among addEventListener's listeners in registration order,
// at the place where it was first set. Replacing the value keeps that place; null removes the
// listener, and a later value is registered anew (last). Non-objects read as null
// ([LegacyTreatNonObjectAsNull]).

type Handler = ((event: Event) => unknown) | null;

export class EventHandlerAttribute {
  #value: Handler = null;
  #listener: ((event: Event) => void) | null = null;

  constructor(
    private readonly target: EventTarget,
    private readonly type: string,
  ) {}

  get value(): Handler {
    return this.#value;
  }

  set value(value: unknown) {
    const handler = typeof value === 'function' || (typeof value === 'object' && value !== null) ? (value as Handler) : null;
    this.#value = handler;
    // EventTarget's own methods: a subclass's overrides (which count the program's listeners) are bypassed.
    if (handler && !this.#listener) {
      const target = this.target;
      this.#listener = (event: Event) => {
        const current = this.#value;
        if (typeof current === 'function') current.call(target, event);
      };
      EventTarget.prototype.addEventListener.call(target, this.type, this.#listener);
    } else if (!handler && this.#listener) {
      EventTarget.prototype.removeEventListener.call(this.target, this.type, this.#listener);
      this.#listener = null;
    }
  }
}
