// A small fetch helper for the pages: JSON in, JSON out, and RFC 9457 problem details turned into plain words.
//
//   import { api, ApiError } from './lib/api.js';
//   const me = await api('GET', '/api/v1/me');
//   try { await api('POST', '/api/v1/session', { username, password }); }
//   catch (err) { show(err.message); }   // e.g. "the username or password is wrong"
//
// The session is the gateway's cookie, sent because every request is same-origin.
//
// In English a problem reads as the gateway's own detail (it names what to fix); in any other language, as the
// translation of its stable type (`api.problem.<type>` in web/static/i18n), so that no English sentence with
// internal ids appears in the reader's language.

import { language, t } from './i18n.js';

/** An API call that did not succeed. `message` is the problem's detail (or title) in plain words. */
export class ApiError extends Error {
  constructor(message, { status = 0, type = null, title = null, problem = null } = {}) {
    super(message);
    this.name = 'ApiError';
    /** The HTTP status, or 0 when the gateway could not be reached. */
    this.status = status;
    /** The problem's stable `type` URI, to tell errors apart in code; null when there is none. */
    this.type = type;
    this.title = title;
    /** The whole problem document as the gateway sent it, or null. */
    this.problem = problem;
  }

  /** The last segment of the problem type, e.g. "not-found" for https://custodia.invalid/problems/not-found. */
  get kind() {
    return this.type ? this.type.split('/').pop() : null;
  }
}

/** `key` in the reader's language; `english` where no translations are loaded yet. */
function words(key, english, vars = {}) {
  const text = t(key, vars);
  return text === key ? english : text;
}

/** Plain words for statuses that came without a problem document (a proxy's error page, say). */
function statusWords(status) {
  if (status === 401) return words('api.status.401', 'You are not signed in, or your session has ended. Please sign in again.');
  if (status === 403) return words('api.status.403', 'You are not allowed to do this.');
  if (status === 404) return words('api.status.404', 'This was not found.');
  if (status === 413) return words('api.status.413', 'This is too large for the gateway to accept.');
  if (status === 429) return words('api.status.429', 'Too many requests. Please wait a moment and try again.');
  if (status >= 500) return words('api.status.5xx', 'The gateway could not do this just now. Please try again later.');
  return words('api.status.other', `The gateway refused the request (HTTP ${status}).`, { status });
}

/** A problem in the reader's language: the gateway's detail in English, else the translation of its type. */
function problemWords(problem) {
  const detail = problem.detail || problem.title;
  const kind = typeof problem.type === 'string' ? problem.type.split('/').pop() : '';
  const key = `api.problem.${kind}`;
  if ((language() === 'en' && detail) || t(key) === key) return detail ? sentence(detail) : null;
  return t(key);
}

/**
 * Calls the gateway's API.
 *
 * @param {string} method  GET, POST, PUT, PATCH or DELETE
 * @param {string} path    a same-origin path such as /api/v1/cases
 * @param {unknown} [body] sent as JSON when given (a Blob, ArrayBuffer or typed array is sent as bytes)
 * @param {{signal?: AbortSignal, headers?: Record<string,string>}} [options]
 * @returns {Promise<any>} the parsed JSON reply, or null for an empty reply (204)
 * @throws {ApiError} with the problem's detail in plain words
 */
export async function api(method, path, body, options = {}) {
  const headers = { accept: 'application/json, application/problem+json', ...(options.headers || {}) };
  let payload;
  if (body instanceof Blob || body instanceof ArrayBuffer || ArrayBuffer.isView(body)) {
    payload = body;
  } else if (body !== undefined) {
    headers['content-type'] = 'application/json';
    payload = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: payload,
      credentials: 'same-origin',
      cache: 'no-store',
      signal: options.signal,
    });
  } catch (err) {
    if (err && err.name === 'AbortError') throw err;
    throw unreachable();
  }
  if (!response.ok) throw await failure(response);
  const text = await response.text();
  const type = response.headers.get('content-type') || '';
  if (!text) return null;
  if (!type.includes('json')) return text;
  try {
    return JSON.parse(text);
  } catch {
    throw new ApiError(words('api.unreadable', 'The gateway sent a reply this page cannot read.'), { status: response.status });
  }
}

/** The error for a gateway that could not be reached, in the reader's language. */
export function unreachable() {
  return new ApiError(words('api.unreachable', 'The gateway could not be reached. Check your connection and try again.'));
}

/**
 * The error for a reply that did not succeed (from `api`, or from a page's own `fetch` of a stream): its problem in
 * the reader's language, else plain words for its status.
 */
export async function failure(response) {
  const text = await response.text().catch(() => '');
  const type = response.headers.get('content-type') || '';
  let problem = null;
  if (type.includes('json') && text) {
    try {
      problem = JSON.parse(text);
    } catch {
      problem = null;
    }
  }
  const inWords = problem && problemWords(problem);
  return new ApiError(inWords || statusWords(response.status), {
    status: response.status,
    type: problem ? problem.type || null : null,
    title: problem ? problem.title || null : null,
    problem,
  });
}

/** "the password is wrong" → "The password is wrong." */
function sentence(words) {
  const trimmed = String(words).trim();
  if (!trimmed) return trimmed;
  const first = trimmed[0].toUpperCase() + trimmed.slice(1);
  return /[.!?]$/.test(first) ? first : `${first}.`;
}
