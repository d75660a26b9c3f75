// The official `openai` Node client against a Kangaroo server: a plain chat stream, an opted-in
// (X-Resumable) one and a Responses stream, each long enough for the server's heartbeats.
// Prints what each one assembled as one JSON line.
//   node streams.mjs BASE_URL MODEL
import OpenAI from 'openai';

const [baseURL, model] = process.argv.slice(2);
const client = new OpenAI({ baseURL, apiKey: 'unused', maxRetries: 0 });

async function chat(headers) {
  const body = {
    model, stream: true, temperature: 0, max_tokens: 1000, ignore_eos: true,
    messages: [{ role: 'user', content: 'Hi' }],
  };
  const stream = await client.chat.completions.create(body, { headers });
  let text = '';
  let chunks = 0;
  for await (const chunk of stream) {
    chunks += 1;
    text += chunk.choices[0]?.delta?.content ?? '';
  }
  return { text, chunks };
}

async function responses() {
  const stream = await client.responses.create({ model, input: 'Hi', temperature: 0, stream: true });
  const types = [];
  let text = '';
  for await (const event of stream) {
    types.push(event.type);
    if (event.type === 'response.output_text.delta') text += event.delta;
  }
  return { text, last: types.at(-1) };
}

const plain = await chat({});
const resumable = await chat({ 'X-Resumable': 'true' });
console.log(JSON.stringify({ plain, resumable, responses: await responses() }));
