type CamelToSnake<S extends string> = S extends `${infer H}${infer T}` ? `${H extends Lowercase<H> ? H : `_${Lowercase<H>}`}${CamelToSnake<T>}` : S;
type WithSnakeCase<T> = T & {
    [K in keyof T as CamelToSnake<K & string>]?: T[K];
};
/**
 * Engine options: SGLang's server arguments that apply to an in-process engine, camelCase. {@link EngineOptions}
 * also takes their snake_case spellings. Unknown keys and bad values throw `ERR_INVALID_OPTIONS` naming the key;
 * `getServerInfo()` reports the resolved values.
 */
export interface CamelEngineOptions {
    /** A Hugging Face model directory, a `.gguf` file, or a repo id (`owner/name`) in the HF cache. */
    modelPath: string;
    /** A Hugging Face tokenizer directory (`tokenizer.json`, `tokenizer_config.json`) to use instead of the model's own. */
    tokenizerPath?: string;
    /**
     * The compute type. 'auto' (default): float32 on the CPU (GGUF weights kept quantized), bfloat16 on the GPU.
     * 'float32' (CPU only) dequantizes GGUF weights; 'bfloat16' (CUDA only) is what the GPU always runs. Asking a
     * backend for the other type is `ERR_INVALID_OPTIONS`.
     */
    dtype?: 'auto' | 'float32' | 'bfloat16';
    /**
     * Where the model runs. 'auto' (default): the GPU when the CUDA build (`radixlm-linux-x64-gnu-cuda`) is installed
     * and sees one, else the CPU, silently. 'cpu'; 'cuda' (GPU 0) or 'cuda:N' (an error, not a fallback, when no
     * GPU can be used).
     */
    device?: 'auto' | 'cpu' | 'cuda' | `cuda:${number}`;
    /** Longest prompt + output, in tokens (default: the model's `max_position_embeddings`). */
    contextLength?: number;
    /** Requests decoded together (default 64 on the CPU, 256 on CUDA); more wait in the queue. */
    maxRunningRequests?: number;
    /**
     * KV pool size in tokens. Default on the CPU: what 4 GiB of f32 K/V holds, between 2,048 and 65,536 tokens
     * (committed only as it is used); on CUDA: what `memFractionStatic` leaves.
     */
    maxTotalTokens?: number;
    /**
     * CUDA only: the share of the GPU's total memory that may be in use once the KV pool is allocated (default
     * 0.85). The pool gets `free - total * (1 - memFractionStatic)` bytes after the weights load, so what other
     * processes hold counts against it. Ignored when `maxTotalTokens` is set.
     */
    memFractionStatic?: number;
    /** Prefill token budget per step (default 2048 on the CPU, 8192 on CUDA); -1 disables chunking. */
    chunkedPrefillSize?: number;
    /** KV page size in tokens (default 16); the prefix cache shares whole pages. */
    pageSize?: number;
    /** Turn prefix sharing off: every prompt is computed in full. */
    disableRadixCache?: boolean;
    /** 'fcfs' (default, as SGLang) or 'lpm': waiting prompts with the longest cached prefix first. */
    schedulePolicy?: 'fcfs' | 'lpm';
    /**
     * Seeds every request that sets no `seed` (each gets a seed derived from this and its submission order), so the
     * same requests on a fresh engine give the same outputs. Unset: a random seed per engine.
     */
    randomSeed?: number;
    /**
     * Token ids in and out only (SGLang's `skip_tokenizer_init`): no tokenizer is loaded, prompts must be
     * `{ inputIds }`, outputs carry `outputIds` and an empty `text`; stop strings, chat and grammars are refused.
     */
    skipTokenizerInit?: boolean;
    /** Accepted for SGLang compatibility (default 'error'); the engine writes no logs. */
    logLevel?: string;
    /** Let requests ask for `returnHiddenStates` (off by default, as in SGLang). */
    enableReturnHiddenStates?: boolean;
    /** CUDA only: the largest decode batch run as a captured CUDA graph (default 256, capped by `maxRunningRequests`). */
    cudaGraphMaxBs?: number;
    /** CUDA only: launch every decode step's kernels one by one instead of replaying CUDA graphs. */
    disableCudaGraph?: boolean;
    /**
     * Schedule each pass only after the previous one's results are back. By default (as SGLang) the next
     * pass is scheduled and launched while the current one runs, whenever the current one's tokens are all
     * drawn by the backend (greedy or plain sampling, no logprobs, penalties or grammar).
     */
    disableOverlapSchedule?: boolean;
}
/** What `getServerInfo()` reports: resolved options, then the KV pool and counters since start. */
export interface ServerInfo {
    /** As given in the options. */
    modelPath: string;
    /** Where the model was found (a hub repo id resolves to its folder in the HF cache). */
    resolvedModelPath: string;
    /** Longest prompt + output, in tokens. */
    contextLength: number;
    /** KV pool size in tokens. */
    maxTotalTokens: number;
    /** The longest prompt accepted, in tokens (SGLang's `max_req_input_len`): one less than the smaller of
     * `contextLength` and `maxTotalTokens`, so at least one token can be generated; longer is ERR_PROMPT_TOO_LONG. */
    maxReqInputLen: number;
    /** This radixlm's version. */
    version: string;
    /** KV page size in tokens. */
    pageSize: number;
    /** Requests decoded together. */
    maxRunningRequests: number;
    /** Prefill token budget per step; -1: no chunking. */
    chunkedPrefillSize: number;
    /** Admission order of waiting requests. */
    schedulePolicy: 'fcfs' | 'lpm';
    disableRadixCache: boolean;
    /** The weights as they run: 'auto' or 'float32' on the CPU, 'bfloat16' on CUDA. */
    dtype: string;
    /** 'cpu', or the GPU's name and compute capability. */
    device: string;
    /** Rows of the model's embedding: every token id must be below it. */
    vocabSize: number;
    /** KV pool size in pages (`maxTotalTokens / pageSize`). */
    poolPages: number;
    /** Pages on the free list. */
    pagesFree: number;
    /** Pages running requests hold (their own, or cached ones they use). */
    pagesUsed: number;
    /** Pages held by the prefix cache, in use or not. */
    pagesCached: number;
    /** Cached pages no request uses: reclaimed (LRU) when the free list runs short. */
    pagesEvictable: number;
    /** Cached pages evicted since start. */
    pagesEvictedTotal: number;
    /** Whether the prefix cache is on (`!disableRadixCache`). */
    radixCache: boolean;
    /** Prompt tokens admitted since start. */
    promptTokensTotal: number;
    /** Prompt tokens served from the prefix cache (first admission of each request). */
    cachedTokensTotal: number;
    /** cachedTokensTotal / promptTokensTotal. */
    cacheHitRate: number;
    /** Requests being prefilled or decoded now. */
    running: number;
    /** Requests queued for admission. */
    waiting: number;
    /** Forward passes taken. */
    steps: number;
    /**
     * Passes left running while the next one was scheduled and launched (overlap schedule; 0 with
     * `disableOverlapSchedule`).
     */
    overlapSteps: number;
    /** Requests put back in the queue because decode ran out of pages (they recompute, same output). */
    retractions: number;
    /** Failed page-accounting checks (always 0 unless there is a bug). */
    integrityFailures: number;
    /** Structured output: token masks computed (one per constrained sample), and the seconds they took. */
    grammarMasks: number;
    /** Seconds spent computing structured-output masks. */
    grammarMaskSeconds: number;
    /**
     * Backend counters, null on the CPU. On CUDA: `kvPoolPages`, `cudaGraphs` (captured), `graphSteps` and
     * `eagerSteps`; `decodeGpuSeconds` / `extendGpuSeconds` (GPU time of pure decode steps / steps with
     * prefill); `gpuBusy`, the GPU's busy fraction over consecutive decode steps on its own clock
     * (`chainGpuSeconds` / `chainWallSeconds`: idle gaps between steps count against it).
     */
    backend: Record<string, number> | null;
}
/**
 * Loading progress (`Engine.create`'s `onProgress`): a model file downloading from the Hugging Face hub
 * (`stage: 'download'`), then the weights loading into the backend (`stage: 'load'`, reported after each
 * decoder layer, in bytes of the weight files so one bar can show both).
 */
export interface LoadProgress {
    stage: 'download' | 'load';
    /** The file's path in the repo (download), or the model file or folder (load). */
    file: string;
    /** Bytes so far. */
    downloaded: number;
    /** Bytes in all, when known (the hub may not say). */
    total?: number;
}
/** {@link CamelEngineOptions}, whose keys may also be spelled in snake_case (`model_path`, `mem_fraction_static`...). */
export type EngineOptions = WithSnakeCase<CamelEngineOptions> & {
    /** `Engine.create` only: called as model files download from the hub and as the weights load. */
    onProgress?: (progress: LoadProgress) => void;
};
/**
 * Sampling parameters, as SGLang's `SamplingParams` with camelCase names and SGLang's defaults. Temperature,
 * topP, topK and minP default to the model's `generation_config.json` when it sets them. Unknown keys and
 * out-of-range values throw `ERR_INVALID_SAMPLING_PARAMS` naming the key; `null` means the default.
 */
export interface CamelSamplingParams {
    /** Most tokens to generate (default 128). */
    maxNewTokens?: number;
    /** EOS and `stopTokenIds` cannot be drawn until this many tokens are out (default 0). */
    minNewTokens?: number;
    /** Default 1.0; 0 (anything below 1e-6) is greedy. */
    temperature?: number;
    /** Nucleus sampling, in (0, 1] (default 1: off). */
    topP?: number;
    /** Sample among the k most likely tokens; -1 (default): all. */
    topK?: number;
    /** Drop tokens less likely than minP times the most likely one, in [0, 1] (default 0: off). */
    minP?: number;
    /** In [-2, 2], subtracted once per earlier occurrence of a token in the output (default 0). */
    frequencyPenalty?: number;
    /** In [-2, 2], subtracted from every token already in the output (default 0). */
    presencePenalty?: number;
    /** In (0, 2], divides positive logits (multiplies negative ones) of tokens in the prompt or output; 1 (default): off. */
    repetitionPenalty?: number;
    /** Strings that end the output, matched across token boundaries; trimmed from `text` unless `noStopTrim`. */
    stop?: string | string[];
    /**
     * Regular expressions (Rust `regex` syntax: no look-around or backreferences) that end the output once the
     * text matches one; `finishReason` is `{ type: 'stop', matched: <the pattern> }`, and `text` ends where the
     * leftmost match starts (through its end with `noStopTrim`). Streams hold back text a match could still
     * start in, so no chunk shows what the end trims.
     */
    stopRegex?: string | string[];
    /** Token ids that end the output (kept in `outputIds`). */
    stopTokenIds?: number[];
    /** Keep going past the model's EOS tokens (default false). */
    ignoreEos?: boolean;
    /** Leave special tokens out of `text` (default true). */
    skipSpecialTokens?: boolean;
    /**
     * Accepted for SGLang compatibility (default true) and without effect: radixlm decodes like Hugging Face's
     * fast tokenizers, which ignore it too (only the slow Python tokenizers insert those spaces).
     */
    spacesBetweenSpecialTokens?: boolean;
    /** Keep the matched stop string (or stop regex match) in `text` (default false). */
    noStopTrim?: boolean;
    /** Samples per prompt, in [1, 1024] (default 1); a single prompt then gives an array, prompt-major. */
    n?: number;
    /** Seeds this request's sampling, so it repeats whatever else is in the batch (SGLang's `sampling_seed`). */
    seed?: number;
    /** `{ tokenId: bias }`, added to the logits before sampling. */
    logitBias?: Record<string, number>;
    /** Structured output (at most one of the three): a JSON Schema, as JSON text (SGLang) or an object. */
    jsonSchema?: string | Record<string, unknown> | boolean;
    /** A regular expression (Rust `regex` syntax) the whole output must match. */
    regex?: string;
    /** A grammar: llguidance's Lark-like syntax (`start: ...`) or GBNF (`root ::= ...`). */
    ebnf?: string;
}
/** {@link CamelSamplingParams}, whose keys may also be spelled in snake_case (`max_new_tokens`, `top_p`...). */
export type SamplingParams = WithSnakeCase<CamelSamplingParams>;
/**
 * Why a request ended: a stop string, regex or token (`matched`: the string, the `stopRegex` pattern, or the
 * token id, EOS included), the `maxNewTokens` budget (`length`), or an abort (its reason in `message`).
 */
export type FinishReason = {
    type: 'stop';
    matched: number | string;
} | {
    type: 'length';
    length: number;
} | {
    type: 'abort';
    message: string;
};
/** Everything about a request besides its text and ids (SGLang's `meta_info`). */
export interface MetaInfo {
    /** The request id: `rid` when given, else one the engine made up. */
    id: string;
    /** Null until the request ends (stream chunks before the last). */
    finishReason: FinishReason | null;
    /** Tokens in the prompt. */
    promptTokens: number;
    /** Tokens generated so far. */
    completionTokens: number;
    /** Prompt tokens served from the prefix cache (on every stream chunk, as SGLang's `cached_tokens`). */
    cachedTokens: number;
    /** Times the request was put back in the queue because decode ran out of KV pages (final only). */
    numRetractions?: number;
    /** Seconds from submission to the end; on the final output or chunk only. */
    e2eLatency?: number;
    /**
     * With `returnLogprob` and `logprobStartLen >= 0` (final output only): one triple per prompt position from
     * `logprobStartLen`, from the model's raw distribution; the first prompt position's logprob is null.
     */
    inputTokenLogprobs?: LogprobTriple[];
    /**
     * With `returnLogprob` (final output only): one triple per generated token, from the distribution it was drawn
     * from before truncation (penalties and logit bias applied, divided by the temperature; greedy: T=1), as SGLang.
     */
    outputTokenLogprobs?: LogprobTriple[];
    /** With `topLogprobsNum`: per position, the most likely tokens (most likely first); null at position 0. */
    inputTopLogprobs?: (LogprobTriple[] | null)[];
    /** With `topLogprobsNum`: per generated token, the most likely tokens (most likely first). */
    outputTopLogprobs?: LogprobTriple[][];
    /** With `tokenIdsLogprob`: per position, the logprobs of the requested ids. */
    inputTokenIdsLogprobs?: (LogprobTriple[] | null)[];
    /** With `tokenIdsLogprob`: per generated token, the logprobs of the requested ids. */
    outputTokenIdsLogprobs?: LogprobTriple[][];
}
/** `[logprob, tokenId, text]`: text is null unless `returnTextInLogprobs`. */
export type LogprobTriple = [number | null, number, string | null];
/** A finished request (SGLang's output dict, camelCase). */
export interface GenerateOutput {
    /** The generated text (the prompt not included); empty with `skipTokenizerInit`. */
    text: string;
    /** The generated token ids. */
    outputIds: number[];
    /** Counters, finish reason, latency and, when asked, logprobs. */
    metaInfo: MetaInfo & {
        finishReason: FinishReason;
    };
    /** With `returnHiddenStates`: the final-layer hidden state (after the final norm) of every position fed
     * to the model: one per prompt token, then one per generated token except the last. */
    hiddenStates?: Float32Array[];
}
/** One step of a stream: the new text and ids, and the cumulative text. The last chunk has `metaInfo.finishReason`. */
export interface StreamChunk {
    /** All text so far. */
    text: string;
    /** Text new in this chunk. */
    delta: string;
    /** Token ids new in this chunk. */
    outputIds: number[];
    /** Position of the request in the (expanded) batch. */
    index: number;
    /** Counters so far; on the last chunk, the final ones with `finishReason`, `e2eLatency` and any logprobs. */
    metaInfo: MetaInfo;
}
/** What a request returns besides text (SGLang's request fields of the same names, camelCase). */
export interface CamelReturnOptions {
    /** Add logprob arrays to metaInfo. */
    returnLogprob?: boolean;
    /** How many alternatives per position (default 0). */
    topLogprobsNum?: number;
    /** -1 (default): output positions only; k >= 0: prompt positions from k as well. */
    logprobStartLen?: number;
    /** Logprobs of these ids at each position (label scoring). */
    tokenIdsLogprob?: number[];
    /** Fill the text slot of each logprob triple. */
    returnTextInLogprobs?: boolean;
    /** Needs the engine option `enableReturnHiddenStates`. */
    returnHiddenStates?: boolean;
}
/** The last argument of every generate and chat call: {@link CamelReturnOptions} (snake_case accepted), plus these. */
export type GenerateOptions = WithSnakeCase<CamelReturnOptions> & {
    /** Aborts the request(s): promises reject and streams throw `ERR_ABORTED`, and their KV pages are freed. */
    signal?: AbortSignal;
    /** Request id(s), one per prompt, reported as `metaInfo.id`; they must be unique within the call. */
    rid?: string | string[];
    /** `generate` / `generateSync` (and `chat*`) only, like vLLM's `use_tqdm`: `true` draws a bar on stderr
     * when it is a TTY; a function hears `{ done, total }` as each output arrives (generateSync: input order). */
    progress?: boolean | ((p: {
        done: number;
        total: number;
    }) => void);
};
/** One prompt (a string, or `{ inputIds: number[] }`) gives one output; a batch (`string[]`, `number[][]`) an array. */
export type Prompt = string | string[] | {
    inputIds: number[] | number[][];
};
/** Every error radixlm throws on purpose. `code` is stable (`ERR_INVALID_SAMPLING_PARAMS`, `ERR_ABORTED`...): test it, not the message. */
export declare class RadixLMError extends Error {
    /** A stable `ERR_*` code; see docs/errors.md. */
    readonly code: string;
    /**
     * Only on `ERR_ABORTED` from `generate` / `chat` whose `signal` fired after the call was made (a signal
     * already aborted rejects before anything runs): the outputs as they stood, in the shape the call would have
     * returned. Requests that had finished are complete; the others hold their text
     * so far and `finishReason: { type: 'abort' }`. So a batch job that hits a deadline keeps what it made.
     */
    partial?: GenerateOutput | GenerateOutput[];
    constructor(code: string, message: string);
}
/** A chat message: `role`, `content` (a string or a list of parts) and whatever else the template reads
 * (`tool_calls`, `name`, `reasoning_content`...). It reaches the template as JSON; null keys are dropped. */
export interface ChatMessage {
    role: string;
    content?: string | object[] | null;
    [key: string]: unknown;
}
/** One conversation: the messages in order. */
export type Conversation = ChatMessage[];
/** What the chat template sees besides the messages. */
export interface CamelChatTemplateOptions {
    /** Function schemas (OpenAI-style `{ type: 'function', function: { name, description, parameters } }`). */
    tools?: object[];
    /** Documents for retrieval-augmented templates (`{ title, text }` objects). */
    documents?: object[];
    /** Extra template variables, passed as they are (e.g. `{ enable_thinking: false }`). */
    chatTemplateKwargs?: Record<string, unknown>;
}
/** {@link CamelChatTemplateOptions}, snake_case accepted (`chat_template_kwargs`). */
export type ChatTemplateOptions = WithSnakeCase<CamelChatTemplateOptions>;
/** `applyChatTemplate`'s options: the template's, `addGenerationPrompt` and `tokenize`. */
export type ApplyChatTemplateOptions = WithSnakeCase<CamelChatTemplateOptions & {
    /** Append the assistant turn's opening (default true, unlike transformers' false: it is what generation needs). */
    addGenerationPrompt?: boolean;
}> & {
    /** Return token ids instead of text (the rendered text tokenized without adding special tokens again). */
    tokenize?: boolean;
};
/** `chat*` options: the generate options plus the template's. */
export type ChatOptions = GenerateOptions & ChatTemplateOptions;
/**
 * An in-process inference engine: one model, its KV pool and prefix cache, and a scheduler that batches every
 * request submitted to it (SGLang's `sgl.Engine`). Call `shutdown()` (or `using`) when done.
 */
export declare class Engine {
    #private;
    /** Loads the model, blocking until it is ready (like `sgl.Engine(model_path=...)`). */
    constructor(options: EngineOptions);
    /** Loads the model without blocking the event loop. */
    static create(options: EngineOptions): Promise<Engine>;
    /** Non-streaming, blocking: one output for one prompt, an array (input order) for a batch. */
    generateSync(prompts: string | {
        inputIds: number[];
    }, samplingParams?: SamplingParams, options?: GenerateOptions): GenerateOutput;
    generateSync(prompts: string[] | {
        inputIds: number[][];
    }, samplingParams?: SamplingParams | SamplingParams[], options?: GenerateOptions): GenerateOutput[];
    generateSync(prompts: Prompt, samplingParams?: SamplingParams | SamplingParams[], options?: GenerateOptions): GenerateOutput | GenerateOutput[];
    /**
     * Non-streaming, async. Rejects with ERR_ABORTED when `options.signal` aborts; the error's `partial` holds
     * the outputs as they stood (finished requests complete, the rest up to the abort).
     */
    generate(prompts: string | {
        inputIds: number[];
    }, samplingParams?: SamplingParams, options?: GenerateOptions): Promise<GenerateOutput>;
    generate(prompts: string[] | {
        inputIds: number[][];
    }, samplingParams?: SamplingParams | SamplingParams[], options?: GenerateOptions): Promise<GenerateOutput[]>;
    generate(prompts: Prompt, samplingParams?: SamplingParams | SamplingParams[], options?: GenerateOptions): Promise<GenerateOutput | GenerateOutput[]>;
    /** Streaming, blocking iterator. Leaving the loop early aborts the request(s). */
    generateStreamSync(prompts: Prompt, samplingParams?: SamplingParams | SamplingParams[], options?: GenerateOptions): Generator<StreamChunk>;
    /** Streaming, async iterator; chunks of a batch interleave in arrival order, tagged with `index`. */
    generateStream(prompts: Prompt, samplingParams?: SamplingParams | SamplingParams[], options?: GenerateOptions): AsyncGenerator<StreamChunk>;
    /**
     * Renders `messages` with the model's chat template (like transformers' `apply_chat_template`, but
     * `addGenerationPrompt` defaults to true). A batch of conversations gives an array.
     */
    applyChatTemplate(messages: Conversation, options?: ApplyChatTemplateOptions & {
        tokenize?: false;
    }): string;
    applyChatTemplate(messages: Conversation, options: ApplyChatTemplateOptions & {
        tokenize: true;
    }): number[];
    applyChatTemplate(messages: Conversation[], options?: ApplyChatTemplateOptions & {
        tokenize?: false;
    }): string[];
    applyChatTemplate(messages: Conversation[], options: ApplyChatTemplateOptions & {
        tokenize: true;
    }): number[][];
    applyChatTemplate(messages: Conversation | Conversation[], options?: ApplyChatTemplateOptions): string | number[] | string[] | number[][];
    /** Chat, non-streaming, async: renders the chat template, then generates from its token ids. */
    chat(messages: Conversation, samplingParams?: SamplingParams, options?: ChatOptions): Promise<GenerateOutput>;
    chat(messages: Conversation[], samplingParams?: SamplingParams | SamplingParams[], options?: ChatOptions): Promise<GenerateOutput[]>;
    chat(messages: Conversation | Conversation[], samplingParams?: SamplingParams | SamplingParams[], options?: ChatOptions): Promise<GenerateOutput | GenerateOutput[]>;
    /** Chat, non-streaming, blocking. */
    chatSync(messages: Conversation, samplingParams?: SamplingParams, options?: ChatOptions): GenerateOutput;
    chatSync(messages: Conversation[], samplingParams?: SamplingParams | SamplingParams[], options?: ChatOptions): GenerateOutput[];
    chatSync(messages: Conversation | Conversation[], samplingParams?: SamplingParams | SamplingParams[], options?: ChatOptions): GenerateOutput | GenerateOutput[];
    /** Chat, streaming, async iterator (chunks as in `generateStream`). */
    chatStream(messages: Conversation | Conversation[], samplingParams?: SamplingParams | SamplingParams[], options?: ChatOptions): AsyncGenerator<StreamChunk>;
    /** Chat, streaming, blocking iterator. */
    chatStreamSync(messages: Conversation | Conversation[], samplingParams?: SamplingParams | SamplingParams[], options?: ChatOptions): Generator<StreamChunk>;
    /** The model's token ids for `text` (special tokens added as the tokenizer is configured to). */
    tokenize(text: string): number[];
    /** The text of `ids`; special tokens are left out unless `skipSpecialTokens` is false. */
    detokenize(ids: number[], options?: {
        skipSpecialTokens?: boolean;
    }): string;
    /** Resolved options, KV pool state and counters. */
    getServerInfo(): ServerInfo;
    /** Drops every cached prefix no running request uses (SGLang's flush_cache). */
    flushCache(): void;
    /**
     * Ends every request submitted so far, queued or running (SGLang's `abort_request(abort_all=True)`): each
     * settles with its output so far and `finishReason: { type: 'abort', message: 'aborted by abortAll' }`
     * (a stream's last chunk carries it), and its KV pages return. Unlike a call's `signal`, the calls do not
     * reject. Requests submitted afterwards are not affected; the engine keeps serving. A stream submits its
     * requests when it is first iterated, so one not yet iterated is not affected either.
     */
    abortAll(): void;
    /** Idempotent. In-flight requests reject with ERR_ENGINE_SHUTDOWN; model memory is freed. */
    shutdown(): void;
    /** `await using llm = await Engine.create(...)` shuts the engine down at the end of the scope. */
    [Symbol.asyncDispose](): Promise<void>;
    /** `using llm = new Engine(...)` shuts the engine down at the end of the scope. */
    [Symbol.dispose](): void;
}
/** Runs a stream and returns the whole text (the concatenated deltas). */
export declare function streamAndMerge(llm: Engine, prompt: string | {
    inputIds: number[];
}, samplingParams?: SamplingParams): string;
/** Yields each new piece of text of a stream (empty pieces skipped). */
export declare function asyncStreamAndMerge(llm: Engine, prompt: string | {
    inputIds: number[];
}, samplingParams?: SamplingParams): AsyncGenerator<string>;
export {};
