// The elizaOS Cloud clients from npm against the gateway's /api/v1:
//
// - @elizaos/plugin-elizacloud 1.7.3 (npm "latest"): its IMAGE model handler, its own
//   URL-and-key check (the plugin's test "ELIZAOS_CLOUD_test_url_and_api_key_validation")
//   and init()'s startup models check. The plugin reads everything through
//   runtime.getSetting(key) (falling back to process.env), and its image handler, init and
//   that test use nothing else of the runtime, so the runtime here is just that function
//   over a settings object: the smallest honest IAgentRuntime these code paths need.
// - @elizaos/cloud-sdk 2.0.0-beta.1 (what plugin-elizacloud 2.x calls): ElizaCloudClient
//   built as the 2.x plugin's createElizaCloudClient builds it; listModels, generateImage,
//   getCreditsBalance and InsufficientCreditsError on a 402.
//
// Env: ELIZAOS_CLOUD_BASE_URL (http://<gateway>/api/v1), ELIZAOS_CLOUD_API_KEY,
// BROKE_API_KEY (a key whose tenant cannot pay for one image) and LIMITED_API_KEY (a tenant
// limited to one request a minute). One JSON object on stdout.
import { ModelType } from "@elizaos/core";
import { elizaOSCloudPlugin } from "@elizaos/plugin-elizacloud";
import { ElizaCloudClient, InsufficientCreditsError, CloudApiError } from "@elizaos/cloud-sdk";

const base = process.env.ELIZAOS_CLOUD_BASE_URL;
const key = process.env.ELIZAOS_CLOUD_API_KEY;
const brokeKey = process.env.BROKE_API_KEY;
const limitedKey = process.env.LIMITED_API_KEY;

function runtime(settings) {
  return { getSetting: (name) => settings[name] };
}

async function step(run) {
  try {
    return await run();
  } catch (error) {
    if (error instanceof CloudApiError) {
      return {
        error: {
          name: error.name,
          status: error.statusCode,
          message: error.message,
          requiredCredits: error.requiredCredits ?? null,
          body: error.errorBody,
        },
      };
    }
    return { error: { name: error?.name ?? "Error", message: String(error?.message ?? error) } };
  }
}

const plugin = elizaOSCloudPlugin;
const agent = runtime({ ELIZAOS_CLOUD_BASE_URL: base, ELIZAOS_CLOUD_API_KEY: key });
const urlCheck = plugin.tests[0].tests.find(
  (test) => test.name === "ELIZAOS_CLOUD_test_url_and_api_key_validation"
);

// init() checks GET {base}/models in the background and only logs the outcome; watch the
// fetch it makes to see what it got.
async function initCheck(runtimeForInit = agent) {
  const seen = [];
  const original = globalThis.fetch;
  globalThis.fetch = async (input, options) => {
    const response = await original(input, options);
    seen.push({ url: String(input), status: response.status });
    return response;
  };
  try {
    await plugin.init({}, runtimeForInit);
    for (let i = 0; i < 100 && seen.length === 0; i += 1) {
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  } finally {
    globalThis.fetch = original;
  }
  return { requests: seen };
}

function sdk(apiKey) {
  const apiBaseUrl = base.replace(/\/+$/, "");
  const siteBaseUrl = apiBaseUrl.endsWith("/api/v1") ? apiBaseUrl.slice(0, -7) : apiBaseUrl;
  return new ElizaCloudClient({ apiBaseUrl, baseUrl: siteBaseUrl, apiKey });
}

const results = {
  plugin_init_models_check: await step(initCheck),
  plugin_url_and_key_check: await step(async () => {
    await urlCheck.fn(agent);
    return { ok: true };
  }),
  plugin_image: await step(async () => ({
    images: await plugin.models[ModelType.IMAGE](agent, {
      prompt: "an elizaOS agent's avatar",
      count: 1,
      size: "1792x1024",
    }),
  })),
  plugin_image_trailing_slash: await step(async () => ({
    images: await plugin.models[ModelType.IMAGE](
      runtime({ ELIZAOS_CLOUD_BASE_URL: `${base}/`, ELIZAOS_CLOUD_API_KEY: key }),
      { prompt: "a trailing slash", count: 1 }
    ),
  })),
  plugin_image_no_credits: await step(async () => ({
    images: await plugin.models[ModelType.IMAGE](
      runtime({ ELIZAOS_CLOUD_BASE_URL: base, ELIZAOS_CLOUD_API_KEY: brokeKey }),
      { prompt: "no credits", count: 1 }
    ),
  })),
  // A tenant allowed one request a minute: the startup check must not use it up.
  limited_agent_starts_then_generates: await step(async () => {
    const limited = runtime({ ELIZAOS_CLOUD_BASE_URL: base, ELIZAOS_CLOUD_API_KEY: limitedKey });
    const init = await initCheck(limited);
    const images = await plugin.models[ModelType.IMAGE](limited, { prompt: "my one image", count: 1 });
    return { init, images };
  }),
  sdk_list_models: await step(async () => await sdk(key).listModels()),
  sdk_generate_image: await step(
    async () =>
      await sdk(key).generateImage({
        prompt: "a 2.x agent's avatar",
        numImages: 1,
        aspectRatio: "1:1",
        // plugin-elizacloud 2.x's default ELIZAOS_CLOUD_IMAGE_GENERATION_MODEL.
        model: "openai/gpt-5-nano",
      })
  ),
  sdk_no_credits: await step(async () => {
    const answer = await sdk(brokeKey).generateImage({ prompt: "no credits", numImages: 1 });
    return { unexpected: answer };
  }),
  sdk_credits_balance: await step(async () => await sdk(key).getCreditsBalance()),
};
// InsufficientCreditsError is the SDK's own class for a 402: say whether it was that one.
results.sdk_no_credits.insufficientCreditsError =
  results.sdk_no_credits.error?.name === InsufficientCreditsError.name;
console.log(JSON.stringify(results));
