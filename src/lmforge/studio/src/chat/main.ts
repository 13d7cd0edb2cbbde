// The chat page `lmforge serve` shows at /: pick a model, chat with streaming replies, a system prompt,
// stop and regenerate; conversations stay in this browser. State for tests: body[data-state] is
// "loading" | "idle" | "streaming" | "error".
import './style.css';
import { ApiError, listModels, streamChat, type Message } from './api';
import { fresh, loadAll, saveAll, setting, type Conversation } from './store';

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;
const ui = {
  model: $<HTMLSelectElement>('model'), temperature: $<HTMLInputElement>('temperature'),
  maxTokens: $<HTMLInputElement>('max-tokens'), key: $<HTMLInputElement>('api-key'), keyLabel: $('key-label'),
  status: $('status'), system: $<HTMLTextAreaElement>('system'), systemBox: $<HTMLDetailsElement>('system-box'),
  messages: $('messages'), composer: $<HTMLFormElement>('composer'), prompt: $<HTMLTextAreaElement>('prompt'),
  send: $<HTMLButtonElement>('send'), stop: $<HTMLButtonElement>('stop'), regenerate: $<HTMLButtonElement>('regenerate'),
  chats: $('chats'), newChat: $<HTMLButtonElement>('new-chat'),
};

let conversations = loadAll();
let current: Conversation;
let controller: AbortController | null = null;

function setState(state: string, status = ''): void {
  document.body.dataset.state = state;
  ui.status.textContent = status;
  const busy = state === 'streaming';
  ui.send.disabled = busy || !ui.model.value;
  ui.stop.disabled = !busy;
  ui.regenerate.disabled = busy || !current?.messages.some((m) => m.role === 'assistant');
}

function persist(): void {
  if (current.messages.length && !conversations.includes(current)) conversations.unshift(current);
  saveAll(conversations);
  renderList();
}

function bubble(m: Message, note = ''): HTMLElement {
  const el = document.createElement('div');
  el.className = `msg ${m.role}`;
  const role = document.createElement('span');
  role.className = 'role';
  role.textContent = m.role;
  const text = document.createElement('span');
  text.className = 'text';
  text.textContent = m.content;
  el.append(role, text);
  if (note) el.append(Object.assign(document.createElement('span'), { className: 'note', textContent: note }));
  ui.messages.append(el);
  ui.messages.scrollTop = ui.messages.scrollHeight;
  return el;
}

function renderMessages(): void {
  ui.messages.replaceChildren();
  for (const m of current.messages) bubble(m);
}

function renderList(): void {
  ui.chats.replaceChildren(...conversations.map((c) => {
    const li = document.createElement('li');
    li.className = c === current ? 'active' : '';
    li.dataset.id = c.id;
    const title = Object.assign(document.createElement('span'), { textContent: c.title, title: c.title });
    const del = Object.assign(document.createElement('button'), { type: 'button', textContent: '×', title: 'Delete' });
    del.addEventListener('click', (e) => {
      e.stopPropagation();
      conversations = conversations.filter((x) => x !== c);
      saveAll(conversations);
      if (c === current) open(fresh(ui.model.value));
      else renderList();
    });
    li.addEventListener('click', () => open(c));
    li.append(title, del);
    return li;
  }));
}

function open(c: Conversation): void {
  controller?.abort();
  current = c;
  ui.system.value = c.system;
  ui.systemBox.open = Boolean(c.system);
  if (c.model && [...ui.model.options].some((o) => o.value === c.model)) ui.model.value = c.model;
  renderMessages();
  renderList();
  setState('idle');
}

async function reply(): Promise<void> {
  current.model = ui.model.value;
  current.system = ui.system.value;
  const messages: Message[] = [...(current.system.trim() ? [{ role: 'system' as const, content: current.system }] : []),
                               ...current.messages];
  const answer: Message = { role: 'assistant', content: '' };
  current.messages.push(answer);
  const el = bubble(answer);
  const text = el.querySelector('.text') as HTMLElement;
  controller = new AbortController();
  setState('streaming', 'generating…');
  try {
    const reason = await streamChat(messages, {
      model: ui.model.value, temperature: Number(ui.temperature.value), max_tokens: Number(ui.maxTokens.value),
    }, ui.key.value, controller.signal, (piece) => {
      answer.content += piece;
      text.textContent = answer.content;
      ui.messages.scrollTop = ui.messages.scrollHeight;
    });
    if (reason !== 'stop') {
      el.append(Object.assign(document.createElement('span'), {
        className: 'note', textContent: reason === 'aborted' ? 'stopped' : 'cut at the token limit',
      }));
    }
    setState('idle');
  } catch (e) {
    el.classList.add('error');
    text.textContent = answer.content + (answer.content ? '\n' : '') + String((e as Error).message);
    current.messages.pop();
    if (e instanceof ApiError && e.status === 401) ui.keyLabel.classList.remove('hidden');
    setState('error', 'the request failed');
  } finally {
    controller = null;
    persist();
  }
}

ui.composer.addEventListener('submit', (e) => {
  e.preventDefault();
  const content = ui.prompt.value.trim();
  if (!content || document.body.dataset.state === 'streaming' || !ui.model.value) return;
  ui.prompt.value = '';
  if (!current.messages.length) current.title = content.slice(0, 60);
  const m: Message = { role: 'user', content };
  current.messages.push(m);
  bubble(m);
  void reply();
});
ui.prompt.addEventListener('keydown', (e) => {
  if (e.key === 'Enter' && !e.shiftKey) { e.preventDefault(); ui.composer.requestSubmit(); }
});
ui.stop.addEventListener('click', () => controller?.abort());
ui.regenerate.addEventListener('click', () => {
  while (current.messages.length && current.messages[current.messages.length - 1].role === 'assistant') {
    current.messages.pop();
  }
  renderMessages();
  void reply();
});
ui.newChat.addEventListener('click', () => open(fresh(ui.model.value)));
for (const [input, name] of [[ui.temperature, 'temperature'], [ui.maxTokens, 'max_tokens'], [ui.key, 'api_key']] as const) {
  input.value = setting.get(name, input.value);
  input.addEventListener('change', () => {
    setting.set(name, input.value);
    if (input === ui.key) void loadModels();
  });
}
ui.model.addEventListener('change', () => setting.set('model', ui.model.value));

async function loadModels(): Promise<void> {
  try {
    const ids = await listModels(ui.key.value);
    ui.model.replaceChildren(...ids.map((id) => Object.assign(document.createElement('option'), { value: id, textContent: id })));
    const wanted = current?.model || setting.get('model', '');
    if (ids.includes(wanted)) ui.model.value = wanted;
    ui.keyLabel.classList.toggle('hidden', !ui.key.value);
    setState(ids.length ? 'idle' : 'error', ids.length ? '' : 'this server has no models');
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) ui.keyLabel.classList.remove('hidden');
    setState('error', e instanceof ApiError && e.status === 401 ? 'this server needs its API key'
      : `cannot list models: ${(e as Error).message}`);
  }
}

current = conversations[0] ?? fresh('');
open(current);
setState('loading');
void loadModels();
