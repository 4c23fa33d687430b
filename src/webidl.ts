// WebIDL conversions and checks that WebGPU makes synchronously, written once for both sides of
// gpunix that make them: the kernel's virtual objects (src/vgpu) and the remote client
// (src/client), which must not load the kernel. No dependencies.

export function operationError(message: string): Error {
  return new DOMException(message, 'OperationError') as unknown as Error;
}

/** WebIDL's [EnforceRange] integer conversion, as Dawn makes it: TypeError unless finite and in range. */
export function enforceRange(value: unknown, max: number, method: string, what: string): number {
  const number = Number(value);
  if (typeof value === 'bigint' || typeof value === 'symbol' || !Number.isFinite(number)) {
    throw new TypeError(`no overload matched for ${method}:\nvalue is not a number\nwhile converting ${what}`);
  }
  const integer = Math.trunc(number);
  if (integer < 0 || integer > max) throw new TypeError(`no overload matched for ${method}:\nValues are out of the range of that integer.\nwhile converting ${what}`);
  return integer;
}

export const U32_MAX = 0xffffffff;
export const U64_MAX = Number.MAX_SAFE_INTEGER;

/**
 * The bytes of a data argument (writeBuffer's, setImmediates'), checked as WebGPU does:
 * dataOffset and size count elements of a typed array, bytes otherwise; OperationError for a
 * range outside the data or (with multipleOf4) a size that is not a multiple of 4 bytes.
 */
export function dataBytes(method: string, data: unknown, dataOffset = 0, size?: number, multipleOf4 = true): Uint8Array {
  let bytes: Uint8Array;
  let elementSize = 1;
  if (data instanceof ArrayBuffer || (typeof SharedArrayBuffer !== 'undefined' && data instanceof SharedArrayBuffer)) {
    bytes = new Uint8Array(data);
  } else if (ArrayBuffer.isView(data)) {
    bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    elementSize = (data as unknown as { BYTES_PER_ELEMENT?: number }).BYTES_PER_ELEMENT ?? 1;
  } else {
    throw new TypeError(`no overload matched for ${method}: data is not an ArrayBuffer or ArrayBufferView`);
  }
  const elements = bytes.byteLength / elementSize;
  const offset = enforceRange(dataOffset, U64_MAX, method, 'dataOffset');
  if (offset > elements) throw operationError("dataOffset is larger than data's size.");
  const count = size === undefined ? elements - offset : enforceRange(size, U64_MAX, method, 'size');
  if (offset + count > elements) throw operationError("size + dataOffset is larger than data's size.");
  if (multipleOf4 && (count * elementSize) % 4 !== 0) throw operationError('size is not a multiple of 4 bytes.');
  return bytes.subarray(offset * elementSize, (offset + count) * elementSize);
}
