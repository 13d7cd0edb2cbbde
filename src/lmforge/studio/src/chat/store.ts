// Conversations, kept in this browser's localStorage (nothing leaves the machine but the requests themselves).
import type { Message } from './api';

export interface Conversation { id: string; title: string; model: string; system: string; messages: Message[] }

const KEY = 'lmforge.chat.conversations';

export function loadAll(): Conversation[] {
  try {
    const list = JSON.parse(localStorage.getItem(KEY) ?? '[]');
    return Array.isArray(list) ? list : [];
  } catch {
    return [];
  }
}

export function saveAll(list: Conversation[]): void {
  localStorage.setItem(KEY, JSON.stringify(list));
}

export function fresh(model: string): Conversation {
  return { id: `${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}`, title: 'New chat', model,
           system: '', messages: [] };
}

export const setting = {
  get: (name: string, fallback: string): string => localStorage.getItem(`lmforge.chat.${name}`) ?? fallback,
  set: (name: string, value: string): void => localStorage.setItem(`lmforge.chat.${name}`, value),
};
