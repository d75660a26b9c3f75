// Vercel's AI SDK (`ai`) against a Kangaroo server: one tool, a full run with generateText and
// with streamText. PROVIDER is `compatible` (`@ai-sdk/openai-compatible`: chat completions) or
// `openai` (`@ai-sdk/openai`, whose default is the Responses API). Prints one JSON line.
//   node weather.mjs BASE_URL MODEL QUESTION PROVIDER
import { generateText, jsonSchema, stepCountIs, streamText, tool } from 'ai';
import { createOpenAI } from '@ai-sdk/openai';
import { createOpenAICompatible } from '@ai-sdk/openai-compatible';

const [baseURL, model, question, kind] = process.argv.slice(2);
const provider = kind === 'openai'
  ? createOpenAI({ baseURL, apiKey: 'unused' })
  : createOpenAICompatible({ name: 'kangaroo', baseURL, apiKey: 'unused' });

function weatherTool(calls) {
  return tool({
    description: 'The weather in a city now.',
    inputSchema: jsonSchema({
      type: 'object',
      properties: { city: { type: 'string' } },
      required: ['city'],
    }),
    execute: async ({ city }) => {
      calls.push(city);
      return 'Sunny, 21 C';
    },
  });
}

const settings = { model: provider(model), prompt: question, temperature: 0, maxOutputTokens: 60, stopWhen: stepCountIs(2) };

const generatedCalls = [];
const generated = await generateText({ ...settings, tools: { get_weather: weatherTool(generatedCalls) } });

const streamedCalls = [];
const parts = [];
const streamed = streamText({ ...settings, tools: { get_weather: weatherTool(streamedCalls) } });
for await (const part of streamed.fullStream) {
  if (part.type === 'tool-call') parts.push({ type: part.type, toolName: part.toolName, input: part.input });
  if (part.type === 'error') parts.push({ type: 'error', error: String(part.error) });
}

console.log(JSON.stringify({
  generate: { calls: generatedCalls, text: generated.text, steps: generated.steps.length,
              finishReasons: generated.steps.map((s) => s.finishReason) },
  stream: { calls: streamedCalls, text: await streamed.text, parts },
}));
