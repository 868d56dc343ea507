// REST calls to the controller (same origin; the session cookie authenticates them).

export class ApiError extends Error {
  constructor(status, body, requestId) {
    const detail = body && (body.field ? `${body.field}: ${body.reason}` : body.message || body.reason);
    super(detail || `HTTP ${status}`);
    this.status = status;
    this.body = body;
    this.requestId = requestId;
  }
}

let unauthorized = () => {};

/** Called on any 401 after login: the session expired or was revoked. */
export function onUnauthorized(handler) {
  unauthorized = handler;
}

export async function request(method, path, body, { headers = {}, quiet401 = false } = {}) {
  const init = { method, headers: { Accept: 'application/json', ...headers }, credentials: 'same-origin' };
  if (body !== undefined) {
    init.headers['Content-Type'] = method === 'PATCH' ? 'application/merge-patch+json' : 'application/json';
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  const text = await response.text();
  let data = null;
  if (text) {
    try { data = JSON.parse(text); } catch { data = { message: text.slice(0, 200) }; }
  }
  const requestId = response.headers.get('X-Request-ID');
  if (!response.ok) {
    if (response.status === 401 && !quiet401) unauthorized();
    throw new ApiError(response.status, data, requestId);
  }
  return { data, status: response.status, requestId };
}

export const get = (path, opts) => request('GET', path, undefined, opts).then((r) => r.data);
export const post = (path, body, opts) => request('POST', path, body, opts);
export const patch = (path, body, opts) => request('PATCH', path, body, opts);
export const del = (path, opts) => request('DELETE', path, undefined, opts);

/** GET that answers null when the endpoint does not exist (a feature not installed). */
export async function optional(path) {
  try {
    return await get(path);
  } catch (err) {
    if (err instanceof ApiError && (err.status === 404 || err.status === 405 || err.status === 501)) return null;
    throw err;
  }
}
