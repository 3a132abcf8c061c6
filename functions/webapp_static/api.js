// The public API, same origin: sign-in, classify, explain, history. No DOM here.
//
// The access token lives in this module's memory only (never localStorage, sessionStorage or a
// cookie): a reload signs the user out. Every request has a timeout (AbortController), and
// every failure becomes an ApiError whose `message` is a sentence for a person.

const TIMEOUT_MS = { short: 20000, upload: 90000 };

let session = null; // { token, expiresAt, profile }
let onSignedOut = () => {};

export class ApiError extends Error {
  constructor(message, { status = 0, code = "", retryAfter = null, reason = "" } = {}) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
    this.reason = reason;
  }

  /** Whether the same request may succeed later (the service, not the request, failed). */
  get transient() {
    return this.status === 0 || this.status === 429 || this.status >= 500;
  }
}

/** Called with a message when the session ends by itself (expiry, or a 401 answer). */
export function whenSignedOut(callback) {
  onSignedOut = callback;
}

export function currentProfile() {
  return session ? session.profile : null;
}

export function signOut() {
  if (session) clearTimeout(session.timer);
  session = null;
}

function endSession(message) {
  signOut();
  onSignedOut(message);
}

export async function signIn(email, password) {
  const body = new URLSearchParams({ grant_type: "password", username: email, password });
  const answer = await send("/auth/token", { method: "POST", body }, TIMEOUT_MS.short);
  const data = await readJson(answer);
  if (!answer.ok) throw signInError(answer, data);
  const lifetimeMs = Math.max(1, Number(data.expires_in) || 0) * 1000;
  session = { token: data.access_token, expiresAt: Date.now() + lifetimeMs, profile: null };
  // setTimeout's delay is a 32-bit number of milliseconds.
  session.timer = setTimeout(
    () => endSession("Your session has expired. Please sign in again."),
    Math.min(lifetimeMs, 2 ** 31 - 1),
  );
  try {
    session.profile = await getJson("/auth/me");
  } catch (error) {
    signOut();
    throw error;
  }
  return session.profile;
}

/** POST one image to /gradcam (JSON answer): the inference record plus the overlay PNG. */
export async function explain(file, { targetClass = "", acceptOod = false } = {}) {
  const query = new URLSearchParams({ format: "json" });
  if (targetClass) query.set("target_class", targetClass);
  if (acceptOod) query.set("accept_ood", "true");
  const form = new FormData();
  // The server reads the format from the bytes; a neutral type keeps a misnamed file working.
  form.append("file", new Blob([file], { type: "application/octet-stream" }), file.name);
  const answer = await authorised(`/gradcam?${query}`, { method: "POST", body: form }, TIMEOUT_MS.upload);
  const record = await expectJson(answer);
  const overlay = record.overlay_png_b64 ? base64Png(record.overlay_png_b64) : null;
  delete record.overlay_png_b64;
  return { record, overlay };
}

export async function history({ start, stop, user = "", decision = "", pageToken = "", limit = 20 }) {
  const query = new URLSearchParams({ start_time: start, stop_time: stop, limit: String(limit) });
  if (user) query.set("user", user);
  if (decision) query.set("decision", decision);
  if (pageToken) query.set("page_token", pageToken);
  return getJson(`/history?${query}`);
}

export async function record(id, user = "") {
  const query = user ? `?${new URLSearchParams({ user })}` : "";
  return getJson(`/history/${encodeURIComponent(id)}${query}`);
}

/** The stored overlay of a record, as a Blob (the caller makes an object URL of it). */
export async function recordOverlay(id, user = "") {
  const query = user ? `?${new URLSearchParams({ user })}` : "";
  const answer = await authorised(`/history/${encodeURIComponent(id)}/gradcam${query}`, {}, TIMEOUT_MS.short);
  if (!answer.ok) throw await answerError(answer);
  return answer.blob();
}

// -- plumbing ---------------------------------------------------------------------------------

async function getJson(path) {
  return expectJson(await authorised(path, {}, TIMEOUT_MS.short));
}

async function expectJson(answer) {
  if (!answer.ok) throw await answerError(answer);
  const data = await readJson(answer);
  if (data === null) {
    throw new ApiError("The service sent an answer this page cannot read.", { status: answer.status });
  }
  return data;
}

async function authorised(path, init, timeoutMs) {
  const current = session;
  if (!current) {
    // Work left over from a session that has ended (it already said so): refuse quietly.
    throw new ApiError("You are signed out. Please sign in again.", { status: 401 });
  }
  if (Date.now() >= current.expiresAt) {
    const message = "Your session has expired. Please sign in again.";
    endSession(message);
    throw new ApiError(message, { status: 401 });
  }
  const headers = new Headers(init.headers || {});
  headers.set("Authorization", `Bearer ${current.token}`);
  headers.set("Accept", "application/json");
  const answer = await send(path, { ...init, headers }, timeoutMs);
  if (answer.status === 401) {
    const message = "You have been signed out (your session ended). Please sign in again.";
    if (session === current) endSession(message);
    throw new ApiError(message, { status: 401, code: "invalid_token" });
  }
  return answer;
}

async function send(path, init, timeoutMs) {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), timeoutMs);
  try {
    return await fetch(path, { ...init, signal: controller.signal, credentials: "omit", cache: "no-store" });
  } catch (error) {
    if (controller.signal.aborted) {
      const message = "The service took too long to answer, so the request was stopped. Try again.";
      throw new ApiError(message, { code: "timeout" });
    }
    const message = "The service cannot be reached. Check your connection and try again.";
    throw new ApiError(message, { code: "network" });
  } finally {
    clearTimeout(timer);
  }
}

async function readJson(answer) {
  try {
    return await answer.json();
  } catch {
    return null;
  }
}

function retryAfterSeconds(answer) {
  const value = Number.parseInt(answer.headers.get("Retry-After") || "", 10);
  return Number.isFinite(value) && value >= 0 ? value : null;
}

function signInError(answer, data) {
  const retryAfter = retryAfterSeconds(answer);
  const code = (data && data.error) || "";
  if (answer.status === 429 || code === "temporarily_unavailable") {
    const wait = retryAfter ? ` Try again in ${waitText(retryAfter)}.` : " Try again later.";
    return new ApiError(`Too many sign-in attempts.${wait}`, { status: answer.status, code, retryAfter });
  }
  if (code === "invalid_grant") {
    const message = "Wrong e-mail or password, or the account is disabled.";
    return new ApiError(message, { status: answer.status, code });
  }
  if (answer.status >= 500) {
    const message = "The sign-in service is not available right now. Try again in a moment.";
    return new ApiError(message, { status: answer.status, code, retryAfter });
  }
  return new ApiError("Enter your e-mail and password.", { status: answer.status, code });
}

const NOT_CHEST_REASONS = {
  colour: "it is a colour picture, and chest X-rays are grey",
  nearly_constant: "it is almost blank",
  aspect_ratio: "it is much longer than it is wide (or the reverse)",
  features: "it does not resemble the chest films the model learned from",
};

function waitText(seconds) {
  return seconds === 1 ? "1 second" : `${seconds} seconds`;
}

/** An error answer (JSON `{"error", "message"}`) as an ApiError a person can read. */
async function answerError(answer) {
  const data = (await readJson(answer)) || {};
  const code = typeof data.error === "string" ? data.error : "";
  const retryAfter = retryAfterSeconds(answer);
  const extra = { status: answer.status, code, retryAfter, reason: data.reason || "" };
  const later = retryAfter !== null ? `Try again in ${waitText(retryAfter)}.` : "Try again in a moment.";
  const text = (() => {
    switch (code) {
      case "payload_too_large":
        return "This file is too large to send. Choose a smaller image (a few megabytes at most).";
      case "unsupported_media_type":
      case "content_type_mismatch":
        return "This file is not an image the service can read. Choose a PNG or JPEG file.";
      case "empty_image":
        return "This file is empty. Choose a PNG or JPEG image.";
      case "invalid_image":
        return "This image is damaged or incomplete, so it cannot be read. Try saving it again.";
      case "too_many_pixels":
        return "This image has too many pixels. Reduce its size and try again.";
      case "not_a_chest_xray": {
        const why = NOT_CHEST_REASONS[data.reason];
        const because = why ? `: ${why}` : "";
        return `This does not look like a chest X-ray${because}. The model only reads frontal chest X-rays.`;
      }
      case "model_unavailable":
        return `The model is warming up or unavailable. ${later}`;
      case "storage_unavailable":
        return `Storage is unavailable for a moment. ${later}`;
      case "model_timeout":
        return "The model took too long to answer. Try again in a moment.";
      case "model_error":
      case "model_bad_response":
        return "The model could not answer this request. Try again later.";
      case "insufficient_scope":
        return "Only administrators can see other users' history.";
      case "not_found":
        return "This record was not found. It may belong to another user.";
      case "invalid_page_token":
        return "The list changed; start again from the first page.";
      case "unknown_class":
        return "The model does not know this class.";
      case "invalid_parameter":
      case "bad_request":
        return `The request was not accepted: ${data.message || "a value is invalid"}.`;
      default:
        break;
    }
    if (answer.status === 413) return "This file is too large to send. Choose a smaller image.";
    if (answer.status === 503) return `The service is unavailable. ${later}`;
    if (answer.status >= 500) return "Something went wrong on the server. Try again later.";
    return "The request was not accepted.";
  })();
  return new ApiError(text, extra);
}

function base64Png(text) {
  const bytes = Uint8Array.from(atob(text), (character) => character.charCodeAt(0));
  return new Blob([bytes], { type: "image/png" });
}
