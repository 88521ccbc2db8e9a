/** Longest `last_error` stored, in UTF-16 code units. */
export const MAX_ERROR_LENGTH = 2000;
/** Longest text read from a thrown value before it is cut: bounds the work on a huge message. */
const MAX_READ_LENGTH = 4 * MAX_ERROR_LENGTH;

const LONE_SURROGATE = /\p{Cs}/gu;

/**
 * @internal
 * Text for whatever a handler threw — an Error, a string, `null`, an object without a
 * prototype, a value whose getters throw — that every database can store: at most
 * {@link MAX_ERROR_LENGTH} characters of well-formed Unicode without U+0000. Never throws.
 */
export function describeError(error: unknown): string {
  const text = readError(error).slice(0, MAX_READ_LENGTH).replaceAll('\u0000', '\\0').replace(LONE_SURROGATE, '\uFFFD');
  if (text.length <= MAX_ERROR_LENGTH) return text;
  // Cut on a code point boundary, so no half of a surrogate pair is left at the end.
  const cut = text.slice(0, MAX_ERROR_LENGTH - 1).replace(/[\uD800-\uDBFF]$/, '');
  return `${cut}…`;
}

function readError(error: unknown): string {
  try {
    if (error instanceof Error) return `${String(error.name)}: ${String(error.message)}`;
    if (typeof error === 'string') return error;
    return String(error);
  } catch {
    // A null-prototype object, or getters that throw: say what kind of value it was.
    try {
      return `A thrown ${Object.prototype.toString.call(error).slice(8, -1)} that cannot be turned into text`;
    } catch {
      return 'A thrown value that cannot be turned into text';
    }
  }
}
