// The administration page, /admin: accounts (list, create, disable), cases (list, create) and each case's members
// (add, change role, remove), through the same API routes and rules as any client: only an administrator signed in
// with a session lists accounts and cases; every membership change is a custody record made by the gateway.

import { api, ApiError } from './lib/api.js';
import { t } from './lib/i18n.js';
import { $, el, say, signInPage, startLanguage, when } from './lib/dom.js';

const enc = encodeURIComponent;
const ROLES = ['clerk', 'judge', 'prosecutor', 'defence', 'interpreter', 'witness', 'remote_site_officer', 'auditor'];
const view = { me: null, accounts: [], cases: [], case: null, members: [] };

function announce(text) {
  $('status').textContent = text;
}

/** Runs an action, shows its error in plain words next to it, and keeps a double click from running it twice. */
async function attempt(errorElement, action, button) {
  say(errorElement, '');
  if (button) button.disabled = true;
  try {
    return await action();
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) showSignIn(t('console.sessionEnded'));
    else say(errorElement, error.message);
    return undefined;
  } finally {
    if (button) button.disabled = false;
  }
}

function roleOptions(select, chosen) {
  select.replaceChildren(...ROLES.map((role) => new Option(t(`role.${role}`), role)));
  if (chosen) select.value = chosen;
}

await startLanguage($('language'), () => render());

const showSignIn = signInPage({
  signedOut() {
    view.me = null;
  },
  async signedIn(me) {
    view.me = me;
    $('not-admin').hidden = me.is_admin;
    $('admin-body').hidden = !me.is_admin;
    if (me.is_admin) await Promise.all([loadAccounts(), loadCases()]);
  },
  afterSignIn() {
    $('app-title').tabIndex = -1;
    $('app-title').focus();
  },
});

$('sign-out').addEventListener('click', async () => {
  await api('DELETE', '/api/v1/session').catch(() => {});
  showSignIn(t('console.signedOut'));
});

function render() {
  renderAccounts();
  renderCases();
  renderMembers();
  roleOptions($('member-role'), $('member-role').value || 'prosecutor');
}

// Accounts.

async function loadAccounts() {
  const accounts = await attempt($('accounts-error'), () => api('GET', '/api/v1/accounts'));
  if (!accounts) return;
  view.accounts = accounts;
  renderAccounts();
  renderMembers();
}

function accountName(id) {
  const account = view.accounts.find((a) => a.id === id);
  return account ? `${account.display_name} (${account.username})` : id;
}

function renderAccounts() {
  $('accounts').replaceChildren(...view.accounts.map((account) => {
    const disabled = Boolean(account.disabled_at);
    const own = account.id === view.me?.id;
    const state = disabled
      ? t('admin.disabledSince', { when: when(account.disabled_at) })
      : t(account.is_admin ? 'admin.activeAdmin' : 'admin.active');
    return el('tr', { data: { account: account.id } },
      el('td', {}, el('code', {}, account.username)),
      el('td', {}, account.display_name),
      el('td', {}, account.jurisdiction),
      el('td', {}, state),
      el('td', {}, disabled || own ? null : el('button', {
        type: 'button', class: 'danger',
        onclick: (event) => disableAccount(account, event.currentTarget),
      }, t('admin.disable'), el('span', { class: 'visually-hidden' }, ` ${account.username}`))),
    );
  }));
  const chosen = $('member-account').value;
  const active = view.accounts.filter((a) => !a.disabled_at);
  $('member-account').replaceChildren(...active.map((a) => new Option(`${a.display_name} (${a.username})`, a.id)));
  if (active.some((a) => a.id === chosen)) $('member-account').value = chosen;
}

async function disableAccount(account, button) {
  if (!window.confirm(t('admin.confirmDisable', { username: account.username }))) return;
  const row = button.closest('tr');
  await attempt($('accounts-error'), async () => {
    await api('POST', `/api/v1/accounts/${enc(account.id)}/disable`, {});
    announce(t('admin.disabled', { username: account.username }));
    await loadAccounts();
    // The button is gone with the change: the focus goes to the row's first cell, where the state now says so.
    const again = $('accounts').querySelector(`tr[data-account="${CSS.escape(account.id)}"] td`);
    if (again) {
      again.tabIndex = -1;
      again.focus();
    } else if (row?.isConnected) row.focus();
  }, button);
}

$('account-form').addEventListener('submit', (event) => {
  event.preventDefault();
  const body = {
    username: $('account-username').value.trim(),
    display_name: $('account-name').value.trim(),
    jurisdiction: $('account-jurisdiction').value.trim(),
    password: $('account-password').value,
    is_admin: $('account-admin').checked,
  };
  if (!body.username || !body.display_name || !body.jurisdiction || !body.password) {
    say($('account-error'), t('admin.fillAll'));
    return;
  }
  if ([...body.password].length < 12) {
    say($('account-error'), t('admin.passwordShort'));
    return;
  }
  attempt($('account-error'), async () => {
    const account = await api('POST', '/api/v1/accounts', body);
    for (const id of ['account-username', 'account-name', 'account-jurisdiction', 'account-password']) $(id).value = '';
    $('account-admin').checked = false;
    announce(t('admin.created', { username: account.username }));
    await loadAccounts();
    $('account-username').focus();
  }, event.submitter);
});

// Cases.

async function loadCases() {
  const cases = await attempt($('cases-error'), () => api('GET', '/api/v1/admin/cases'));
  if (!cases) return;
  view.cases = cases;
  renderCases();
}

function renderCases() {
  $('cases').replaceChildren(...view.cases.map((item) =>
    el('tr', { data: { case: item.id } },
      el('td', {}, el('code', {}, item.id)),
      el('td', {}, item.title),
      el('td', {}, when(item.created_at)),
      el('td', {}, el('button', {
        type: 'button', 'aria-current': String(view.case?.id === item.id),
        onclick: () => openMembers(item),
      }, t('admin.manageMembers'), el('span', { class: 'visually-hidden' }, ` ${item.title}`))),
    )));
}

$('case-form').addEventListener('submit', (event) => {
  event.preventDefault();
  const title = $('case-title').value.trim();
  const id = $('case-id').value.trim();
  if (!title) {
    say($('case-error'), t('admin.titleMissing'));
    return;
  }
  attempt($('case-error'), async () => {
    const made = await api('POST', '/api/v1/cases', id ? { id, title } : { title });
    $('case-id').value = '';
    $('case-title').value = '';
    announce(t('admin.caseCreated', { title: made.title }));
    await loadCases();
    await openMembers(made);
  }, event.submitter);
});

// Members of one case.

async function openMembers(item) {
  view.case = item;
  const list = await attempt($('members-error'), () => api('GET', `/api/v1/cases/${enc(item.id)}/members`));
  if (!list) return;
  view.members = list.members ?? [];
  $('members-section').hidden = false;
  renderCases();
  renderMembers();
  $('members-title').tabIndex = -1;
  $('members-title').focus();
}

async function reloadMembers() {
  const list = await api('GET', `/api/v1/cases/${enc(view.case.id)}/members`);
  view.members = list.members ?? [];
  renderMembers();
}

function renderMembers() {
  if (!view.case) return;
  $('members-title').textContent = t('admin.membersOf', { title: view.case.title, id: view.case.id });
  $('members-empty').hidden = view.members.length > 0;
  $('members').replaceChildren(...view.members.map((member) => {
    const select = el('select', { class: 'wide', id: `role-${member.account}` });
    roleOptions(select, member.role);
    const name = accountName(member.account);
    return el('tr', { data: { member: member.account } },
      el('td', {}, name),
      el('td', {}, el('label', { class: 'visually-hidden', htmlFor: select.id }, t('admin.roleOf', { name })), select),
      el('td', {},
        el('button', {
          type: 'button',
          onclick: (event) => attempt($('members-error'), async () => {
            await api('PUT', `/api/v1/cases/${enc(view.case.id)}/members/${enc(member.account)}`, { role: select.value });
            announce(t('admin.roleChanged', { name, role: t(`role.${select.value}`) }));
            await reloadMembers();
            $(`role-${member.account}`)?.focus();
          }, event.currentTarget),
        }, t('admin.changeRole'), el('span', { class: 'visually-hidden' }, ` ${name}`)),
        ' ',
        el('button', {
          type: 'button', class: 'danger',
          onclick: (event) => {
            if (!window.confirm(t('admin.confirmRemove', { name }))) return;
            attempt($('members-error'), async () => {
              await api('DELETE', `/api/v1/cases/${enc(view.case.id)}/members/${enc(member.account)}`);
              announce(t('admin.removed', { name }));
              await reloadMembers();
              $('members-title').focus();
            }, event.currentTarget);
          },
        }, t('admin.remove'), el('span', { class: 'visually-hidden' }, ` ${name}`)),
      ),
    );
  }));
}

$('member-form').addEventListener('submit', (event) => {
  event.preventDefault();
  const account = $('member-account').value;
  const role = $('member-role').value;
  if (!account || !view.case) return;
  attempt($('members-error'), async () => {
    await api('PUT', `/api/v1/cases/${enc(view.case.id)}/members/${enc(account)}`, { role });
    announce(t('admin.memberAdded', { name: accountName(account), role: t(`role.${role}`) }));
    await reloadMembers();
    $('member-account').focus();
  }, event.submitter);
});

roleOptions($('member-role'), 'prosecutor');
