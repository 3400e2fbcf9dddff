// The official `openai` npm package, configured only by the environment a user sets:
// OPENAI_BASE_URL=http://<gateway>/v1 and OPENAI_API_KEY=<gateway key>. Each step's result
// (or the error the SDK raised) goes into one JSON object on stdout for tests/clients.
import fs from "node:fs";
import path from "node:path";
import OpenAI, { toFile } from "openai";

const [inputs] = process.argv.slice(2);
const client = new OpenAI({ maxRetries: 0 });
const model = "openai/gpt-image-1";

function failure(error) {
  if (error instanceof OpenAI.APIError) {
    return { error: { status: error.status, param: error.param, type: error.type, body: error.error } };
  }
  return { error: { message: String(error) } };
}

async function step(run) {
  try {
    return await run();
  } catch (error) {
    return failure(error);
  }
}

// Images the SDK handed back (each one the tenant may be charged for).
const delivered = (result) => (result.data ?? []).filter((item) => item.b64_json || item.url).length;

const upload = (name) =>
  toFile(fs.createReadStream(path.join(inputs, name)), name, { type: "image/png" });

const results = {
  generate_b64: await step(async () => {
    const result = await client.images.generate({ model, prompt: "a node lighthouse", size: "1536x1024" });
    return {
      b64_json: result.data[0].b64_json ?? null, url: result.data[0].url ?? null,
      usage: result.usage ?? null, delivered: delivered(result),
    };
  }),
  generate_url: await step(async () => {
    const result = await client.images.generate({
      model, prompt: "a node harbour", size: "1024x1024", response_format: "url", output_format: "png",
    });
    return { url: result.data[0].url ?? null, output_format: result.output_format ?? null, delivered: delivered(result) };
  }),
  edit: await step(async () => {
    const result = await client.images.edit({
      model,
      prompt: "make it dusk",
      size: "1024x1024",
      image: [await upload("first.png"), await upload("second.png")],
      mask: await upload("mask.png"),
    });
    return { b64_json: result.data[0].b64_json ?? null, usage: result.usage ?? null, delivered: delivered(result) };
  }),
  stream: await step(async () => {
    const stream = await client.images.generate({
      model, prompt: "a node sailing boat", size: "1024x1024", stream: true, partial_images: 2,
    });
    const events = [];
    for await (const event of stream) {
      events.push({ type: event.type, index: event.partial_image_index ?? null, b64_json: event.b64_json ?? null });
    }
    return { events, delivered: events.filter((event) => event.type.endsWith(".completed")).length };
  }),
  models_list: await step(async () => {
    const ids = [];
    for await (const entry of client.models.list()) ids.push(entry.id);
    return { ids };
  }),
  models_retrieve: await step(async () => {
    const entry = await client.models.retrieve(model);
    return { id: entry.id, object: entry.object };
  }),
  invalid_quality: await step(async () => {
    const result = await client.images.generate({ model, prompt: "a cat", quality: "bogus" });
    return { delivered: delivered(result) };
  }),
};
console.log(JSON.stringify(results));
