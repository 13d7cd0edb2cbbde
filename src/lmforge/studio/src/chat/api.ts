// The server's own OpenAI-compatible API: the model list and a streamed chat completion (server-sent events).

export interface Message { role: 'system' | 'user' | 'assistant'; content: string }

export class ApiError extends Error {
  constructor(message: string, readonly status: number) { super(message); }
}

function headers(key: string): Record<string, string> {
  const h: Record<string, string> = { 'Content-Type': 'application/json' };
  if (key) h.Authorization = `Bearer ${key}`;
  return h;
}

async function failure(r: Response): Promise<ApiError> {
  let message = `${r.status} ${r.statusText}`;
  try { message = (await r.json()).error?.message ?? message; } catch { /* not JSON */ }
  return new ApiError(message, r.status);
}

export async function listModels(key: string): Promise<string[]> {
  const r = await fetch('v1/models', { headers: headers(key) });
  if (!r.ok) throw await failure(r);
  return ((await r.json()).data as { id: string }[]).map((m) => m.id);
}

export interface Sampling { model: string; temperature: number; max_tokens: number }

/** Stream the assistant's reply: `onText` gets each piece; resolves with the finish reason
 * ("stop", "length", or "aborted" when `signal` fired). */
export async function streamChat(messages: Message[], sampling: Sampling, key: string, signal: AbortSignal,
                                 onText: (piece: string) => void): Promise<string> {
  let r: Response;
  try {
    r = await fetch('v1/chat/completions', {
      method: 'POST', headers: headers(key), signal,
      body: JSON.stringify({ ...sampling, messages, stream: true }),
    });
  } catch (e) {
    if (signal.aborted) return 'aborted';
    throw e;
  }
  if (!r.ok || !r.body) throw await failure(r);
  const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  let reason = 'stop';
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      const events = buffer.split('\n\n');
      buffer = events.pop() ?? '';
      for (const event of events) {
        const data = event.replace(/^data: /, '');
        if (data === '[DONE]') return reason;
        const chunk = JSON.parse(data);
        if (chunk.error) throw new ApiError(chunk.error.message, 500);
        const choice = chunk.choices?.[0];
        if (choice?.delta?.content) onText(choice.delta.content);
        if (choice?.finish_reason) reason = choice.finish_reason;
      }
    }
  } catch (e) {
    if (signal.aborted) return 'aborted';
    throw e;
  }
  return reason;
}
