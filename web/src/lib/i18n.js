// Translations for the pages people outside the court use. Each language is a flat JSON file,
// web/static/i18n/<lang>.json, key → string, that a translator can edit without reading code.
// Markup names its text with data-i18n="key" (textContent), data-i18n-placeholder, data-i18n-label (aria-label).

export const LANGUAGES = {
  en: { name: 'English', dir: 'ltr' },
  fr: { name: 'Français', dir: 'ltr' },
  it: { name: 'Italiano', dir: 'ltr' },
  ar: { name: 'العربية', dir: 'rtl' },
};

const STORAGE_KEY = 'custodia.lang';
let strings = {};
let fallback = {};
let current = 'en';

/**
 * The language to start with: the one chosen before, else `hint` (the court's, from an invite) if supported, else
 * the browser's first supported one, else English.
 */
export function preferredLanguage(hint = null) {
  const chosen = safeStorage()?.getItem(STORAGE_KEY);
  if (chosen && Object.hasOwn(LANGUAGES, chosen)) return chosen;
  if (hint && Object.hasOwn(LANGUAGES, hint)) return hint;
  for (const tag of navigator.languages?.length ? navigator.languages : [navigator.language || 'en']) {
    const base = String(tag).toLowerCase().split('-')[0];
    if (Object.hasOwn(LANGUAGES, base)) return base;
  }
  return 'en';
}

function safeStorage() {
  try {
    return window.localStorage;
  } catch {
    return null;
  }
}

async function load(lang) {
  const response = await fetch(`/i18n/${lang}.json`, { credentials: 'same-origin' });
  if (!response.ok) throw new Error(`translations for ${lang} are missing (${response.status})`);
  return response.json();
}

/** Loads a language, sets lang and dir on <html>, and translates the page. */
export async function setLanguage(lang, { remember = false } = {}) {
  if (!Object.hasOwn(LANGUAGES, lang)) lang = 'en';
  // Both at once: on a slow link, one round trip instead of two before the page speaks the person's language.
  const [english, chosen] = await Promise.all([
    Object.keys(fallback).length ? fallback : load('en'),
    lang === 'en' ? null : load(lang),
  ]);
  fallback = english;
  strings = chosen ?? fallback;
  current = lang;
  document.documentElement.lang = lang;
  document.documentElement.dir = LANGUAGES[lang].dir;
  if (remember) safeStorage()?.setItem(STORAGE_KEY, lang);
  translate(document);
  return lang;
}

export function language() {
  return current;
}

/** The string for `key`, with {name} placeholders filled from `vars`; English if the language lacks it. */
export function t(key, vars = {}) {
  const text = strings[key] ?? fallback[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (whole, name) => (name in vars ? String(vars[name]) : whole));
}

/** Translates every marked element under `root`. */
export function translate(root) {
  for (const el of root.querySelectorAll('[data-i18n]')) el.textContent = t(el.dataset.i18n);
  for (const el of root.querySelectorAll('[data-i18n-placeholder]')) el.placeholder = t(el.dataset.i18nPlaceholder);
  for (const el of root.querySelectorAll('[data-i18n-label]')) el.setAttribute('aria-label', t(el.dataset.i18nLabel));
}

/** Fills a <select> with the languages and switches when it changes. */
export function languagePicker(select, onChange) {
  select.replaceChildren(
    ...Object.entries(LANGUAGES).map(([code, { name }]) => {
      const option = new Option(name, code);
      option.lang = code;
      return option;
    }),
  );
  select.value = current;
  select.addEventListener('change', async () => {
    await setLanguage(select.value, { remember: true });
    onChange?.(select.value);
  });
}

/**
 * A language's name in the reader's language ("it" is "Italian" on an English page, "italiano" on an Italian one), or
 * its code where the browser has no name for it (no Intl.DisplayNames, or a code it does not know). `capital`
 * starts it with a capital letter, for a name that stands alone (a choice's label).
 */
export function languageName(code, { capital = false } = {}) {
  let name = String(code ?? '');
  try {
    name = new Intl.DisplayNames([current], { type: 'language' }).of(name) ?? name;
  } catch {
    // Not a language code, or a browser without Intl.DisplayNames: the code as the court gave it.
  }
  return capital ? name.charAt(0).toLocaleUpperCase(current) + name.slice(1) : name;
}

/** A date and time in the reader's language. */
export function formatDateTime(iso) {
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return String(iso ?? '');
  // With the time zone: the people of a cross-border hearing are not all in the same one.
  const zone = new Intl.DateTimeFormat(current, { timeZoneName: 'short' }).formatToParts(date)
    .find((part) => part.type === 'timeZoneName')?.value;
  const text = new Intl.DateTimeFormat(current, { dateStyle: 'full', timeStyle: 'short' }).format(date);
  return zone ? `${text} (${zone})` : text;
}
