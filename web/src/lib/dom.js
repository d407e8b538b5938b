// What the pages share: small DOM helpers, sizes and dates in plain words, and signing in with a password (the
// console and the portal, both with the form of web/static/partials/sign-in.html).

import { api, ApiError } from './api.js';
import { language, languagePicker, preferredLanguage, setLanguage, t } from './i18n.js';

export const $ = (id) => document.getElementById(id);

/** An element with properties (`class`, `data`, `on…` listeners, attributes) and children (null ones skipped). */
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === 'class') node.className = value;
    else if (key === 'data') Object.assign(node.dataset, value);
    else if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
    else if (key in node) node[key] = value;
    else node.setAttribute(key, value);
  }
  node.append(...children.filter((child) => child != null));
  return node;
}

/** Shows `text` in `element`, or hides it when there is none. */
export function say(element, text) {
  element.textContent = text ?? '';
  element.hidden = !text;
}

/** A size in bytes, in binary units: `small` is how sizes under 1 KiB are written. */
export function bytes(size, small = (n) => `${n} B`) {
  if (size < 1024) return small(size);
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let value = size;
  let unit = -1;
  do {
    value /= 1024;
    unit += 1;
  } while (value >= 1024 && unit < units.length - 1);
  return `${value.toFixed(value < 10 ? 1 : 0)} ${units[unit]}`;
}

/**
 * A date and time in the reader's language, with its time zone named (a hearing links several countries):
 * "3 Dec 2026, 10:30 CET". `seconds` adds the seconds; `timeOnly` leaves the date out.
 */
export function when(iso, { seconds = false, timeOnly = false } = {}) {
  const date = new Date(iso);
  if (iso == null || Number.isNaN(date.getTime())) return String(iso ?? '');
  const fields = { hour: '2-digit', minute: '2-digit', timeZoneName: 'short' };
  if (seconds) fields.second = '2-digit';
  if (!timeOnly) Object.assign(fields, { year: 'numeric', month: 'short', day: 'numeric' });
  return new Intl.DateTimeFormat(language(), fields).format(date);
}

/**
 * Starts a page in the reader's language: the one chosen before, else the browser's. With a `select`, it becomes
 * the language picker, and `changed` runs after each switch (to write dynamic text again).
 */
export async function startLanguage(select, changed) {
  await setLanguage(preferredLanguage()).catch(() => setLanguage('en'));
  if (select) languagePicker(select, changed);
}

/**
 * Signing in with the sign-in form (#sign-in, #sign-in-form, #username, #password, #sign-in-error) in front of the
 * page's #app, with the person's name in #who. `signedOut` runs first whenever the form is shown again,
 * `signedIn(me)` last once someone is signed in, and `afterSignIn` once they have signed in with the form (to move
 * the focus).
 * Returns `showSignIn(message)`, and starts by asking whether someone is signed in already.
 */
export function signInPage({ signedOut = () => {}, signedIn, afterSignIn }) {
  function showSignIn(message) {
    signedOut();
    $('app').hidden = true;
    $('who').hidden = true;
    $('sign-in').hidden = false;
    say($('sign-in-error'), message);
    $('username').focus();
  }

  async function enter(me) {
    $('sign-in').hidden = true;
    $('who').hidden = false;
    $('who-name').textContent = `${me.display_name} (${me.jurisdiction})`;
    $('app').hidden = false;
    await signedIn(me);
  }

  $('sign-in-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    const username = $('username').value.trim();
    const password = $('password').value;
    if (!username || !password) {
      say($('sign-in-error'), t('console.signIn.missing'));
      return;
    }
    try {
      const me = await api('POST', '/api/v1/session', { username, password });
      $('password').value = '';
      await enter(me);
      afterSignIn();
    } catch (error) {
      say($('sign-in-error'), error.message); // a wrong password is a 401 too, but no ended session
    }
  });

  (async () => {
    try {
      await enter(await api('GET', '/api/v1/me'));
    } catch (error) {
      showSignIn(error instanceof ApiError && error.status === 401 ? '' : error.message);
    }
  })();

  return showSignIn;
}
