import { isErrorCode, type ErrorCode } from './constants.js';

/**
 * The one error type Tether throws or rejects with, on every side.
 * `code` is stable and meant for programs; `message` is for humans.
 */
export class TetherError extends Error {
  readonly code: ErrorCode;

  constructor(code: ErrorCode, message: string) {
    super(message);
    this.name = 'TetherError';
    this.code = code;
  }

  /** The plain shape that crosses postMessage and the socket. */
  toJSON(): ErrorShape {
    return { code: this.code, message: this.message };
  }

  /** Rebuilds an error from its wire shape; unknown codes become `internal`. */
  static from(shape: { code: unknown; message: unknown }): TetherError {
    const code = isErrorCode(shape.code) ? shape.code : 'internal';
    const message = typeof shape.message === 'string' ? shape.message : 'Unknown error';
    return new TetherError(code, message);
  }
}

/** An error as data: what crosses a boundary. */
export interface ErrorShape {
  code: ErrorCode;
  message: string;
}
