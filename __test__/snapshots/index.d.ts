type CamelToSnake<S extends string> = S extends `${infer H}${infer T}` ? `${H extends Lowercase<H> ? H : `_${Lowercase<H>}`}${CamelToSnake<T>}` : S;
type WithSnakeCase<T> = T & {
    [K in keyof T as CamelToSnake<K & string>]?: T[K];
};
export interface CamelEngineOptions {
    /** A Hugging Face model directory, a `.gguf` file, or a repo id (`owner/name`) in the HF cache. */
    modelPath: string;
    tokenizerPath?: string;
    /** 'auto' keeps GGUF weights quantized; 'float32' dequantizes them. */
    dtype?: 'auto' | 'float32';
    device?: 'auto' | 'cpu' | 'cuda' | `cuda:${number}`;
    contextLength?: number;
    maxRunningRequests?: number;
    /** KV pool size in tokens. */
    maxTotalTokens?: number;
    memFractionStatic?: number;
    /** Prefill token budget per step; -1 disables chunking. */
    chunkedPrefillSize?: number;
    /** KV page size in tokens (default 16); the prefix cache shares whole pages. */
    pageSize?: number;
    /** Turn prefix sharing off: every prompt is computed in full. */
    disableRadixCache?: boolean;
    /** 'fcfs' (default, as SGLang) or 'lpm': waiting prompts with the longest cached prefix first. */
    schedulePolicy?: 'fcfs' | 'lpm';
    randomSeed?: number;
    skipTokenizerInit?: boolean;
    logLevel?: string;
    enableReturnHiddenStates?: boolean;
    cudaGraphMaxBs?: number;
    disableCudaGraph?: boolean;
}
/** What `getServerInfo()` reports: resolved options, then the KV pool and counters since start. */
export interface ServerInfo {
    modelPath: string;
    resolvedModelPath: string;
    contextLength: number;
    /** KV pool size in tokens. */
    maxTotalTokens: number;
    pageSize: number;
    maxRunningRequests: number;
    chunkedPrefillSize: number;
    schedulePolicy: 'fcfs' | 'lpm';
    disableRadixCache: boolean;
    dtype: string;
    device: string;
    vocabSize: number;
    poolPages: number;
    /** Pages on the free list. */
    pagesFree: number;
    /** Pages running requests hold (their own, or cached ones they use). */
    pagesUsed: number;
    /** Pages held by the prefix cache, in use or not. */
    pagesCached: number;
    /** Cached pages no request uses: reclaimed (LRU) when the free list runs short. */
    pagesEvictable: number;
    pagesEvictedTotal: number;
    radixCache: boolean;
    promptTokensTotal: number;
    /** Prompt tokens served from the prefix cache (first admission of each request). */
    cachedTokensTotal: number;
    /** cachedTokensTotal / promptTokensTotal. */
    cacheHitRate: number;
    running: number;
    waiting: number;
    /** Forward passes taken. */
    steps: number;
    /** Requests put back in the queue because decode ran out of pages (they recompute, same output). */
    retractions: number;
    /** Failed page-accounting checks (always 0 unless there is a bug). */
    integrityFailures: number;
    /** Structured output: token masks computed (one per constrained sample), and the seconds they took. */
    grammarMasks: number;
    grammarMaskSeconds: number;
}
export interface LoadProgress {
    file: string;
    downloaded: number;
    total?: number;
}
export type EngineOptions = WithSnakeCase<CamelEngineOptions> & {
    /** `Engine.create` only: called as model files download from the hub. */
    onProgress?: (progress: LoadProgress) => void;
};
export interface CamelSamplingParams {
    maxNewTokens?: number;
    minNewTokens?: number;
    temperature?: number;
    topP?: number;
    topK?: number;
    minP?: number;
    frequencyPenalty?: number;
    presencePenalty?: number;
    repetitionPenalty?: number;
    stop?: string | string[];
    stopTokenIds?: number[];
    ignoreEos?: boolean;
    skipSpecialTokens?: boolean;
    spacesBetweenSpecialTokens?: boolean;
    noStopTrim?: boolean;
    n?: number;
    seed?: number;
    logitBias?: Record<string, number>;
    /** Structured output (at most one of the three): a JSON Schema, as JSON text (SGLang) or an object. */
    jsonSchema?: string | Record<string, unknown> | boolean;
    /** A regular expression (Rust `regex` syntax) the whole output must match. */
    regex?: string;
    /** A grammar: llguidance's Lark-like syntax (`start: ...`) or GBNF (`root ::= ...`). */
    ebnf?: string;
}
export type SamplingParams = WithSnakeCase<CamelSamplingParams>;
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
export interface MetaInfo {
    id: string;
    finishReason: FinishReason | null;
    promptTokens: number;
    completionTokens: number;
    cachedTokens: number;
    numRetractions?: number;
    /** Seconds from submission to the end; on the final output or chunk only. */
    e2eLatency?: number;
    inputTokenLogprobs?: LogprobTriple[];
    outputTokenLogprobs?: LogprobTriple[];
    /** With `topLogprobsNum`: per position, the most likely tokens (most likely first); null at position 0. */
    inputTopLogprobs?: (LogprobTriple[] | null)[];
    outputTopLogprobs?: LogprobTriple[][];
    /** With `tokenIdsLogprob`: per position, the logprobs of the requested ids. */
    inputTokenIdsLogprobs?: (LogprobTriple[] | null)[];
    outputTokenIdsLogprobs?: LogprobTriple[][];
}
/** `[logprob, tokenId, text]`: text is null unless `returnTextInLogprobs`. */
export type LogprobTriple = [number | null, number, string | null];
export interface GenerateOutput {
    text: string;
    outputIds: number[];
    metaInfo: MetaInfo & {
        finishReason: FinishReason;
    };
    /** With `returnHiddenStates`: the final-layer hidden state (after the final norm) of every position fed
     * to the model: one per prompt token, then one per generated token except the last. */
    hiddenStates?: Float32Array[];
}
export interface StreamChunk {
    /** All text so far. */
    text: string;
    /** Text new in this chunk. */
    delta: string;
    /** Token ids new in this chunk. */
    outputIds: number[];
    /** Position of the request in the (expanded) batch. */
    index: number;
    metaInfo: MetaInfo;
}
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
export type GenerateOptions = WithSnakeCase<CamelReturnOptions> & {
    signal?: AbortSignal;
    rid?: string | string[];
    /** `generate` / `generateSync` (and `chat*`) only, like vLLM's `use_tqdm`: `true` draws a bar on stderr
     * when it is a TTY; a function hears `{ done, total }` as each output arrives (generateSync: input order). */
    progress?: boolean | ((p: {
        done: number;
        total: number;
    }) => void);
};
export type Prompt = string | string[] | {
    inputIds: number[] | number[][];
};
export declare class RadixLMError extends Error {
    readonly code: string;
    constructor(code: string, message: string);
}
/** A chat message: `role`, `content` (a string or a list of parts) and whatever else the template reads
 * (`tool_calls`, `name`, `reasoning_content`...). It reaches the template as JSON; null keys are dropped. */
export interface ChatMessage {
    role: string;
    content?: string | object[] | null;
    [key: string]: unknown;
}
export type Conversation = ChatMessage[];
export interface CamelChatTemplateOptions {
    /** Function schemas (OpenAI-style `{ type: 'function', function: { name, description, parameters } }`). */
    tools?: object[];
    /** Documents for retrieval-augmented templates (`{ title, text }` objects). */
    documents?: object[];
    /** Extra template variables, passed as they are (e.g. `{ enable_thinking: false }`). */
    chatTemplateKwargs?: Record<string, unknown>;
}
export type ChatTemplateOptions = WithSnakeCase<CamelChatTemplateOptions>;
export type ApplyChatTemplateOptions = WithSnakeCase<CamelChatTemplateOptions & {
    /** Append the assistant turn's opening (default true, unlike transformers' false: it is what generation needs). */
    addGenerationPrompt?: boolean;
}> & {
    /** Return token ids instead of text (the rendered text tokenized without adding special tokens again). */
    tokenize?: boolean;
};
/** `chat*` options: the generate options plus the template's. */
export type ChatOptions = GenerateOptions & ChatTemplateOptions;
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
    /** Non-streaming, async. Rejects with ERR_ABORTED when `options.signal` aborts. */
    generate(prompts: string | {
        inputIds: number[];
    }, samplingParams?: SamplingParams, options?: GenerateOptions): Promise<GenerateOutput>;
    generate(prompts: string[] | {
        inputIds: number[][];
    }, samplingParams?: SamplingParams | SamplingParams[], options?: GenerateOptions): Promise<GenerateOutput[]>;
    generate(prompts: Prompt, samplingParams?: SamplingParams | SamplingParams[], options?: GenerateOptions): Promise<GenerateOutput | GenerateOutput[]>;
    /** Streaming, blocking iterator. Leaving the loop early aborts the request(s). */
    generateStreamSync(prompts: Prompt, samplingParams?: SamplingParams | SamplingParams[], options?: GenerateOptions): Generator<StreamChunk>;
    /** Streaming, async iterator; chunks of a batch interleave, tagged with `index`. */
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
    tokenize(text: string): number[];
    detokenize(ids: number[], options?: {
        skipSpecialTokens?: boolean;
    }): string;
    /** Resolved options, KV pool state and counters. */
    getServerInfo(): ServerInfo;
    /** Drops every cached prefix no running request uses (SGLang's flush_cache). */
    flushCache(): void;
    /** Idempotent. In-flight requests reject with ERR_ENGINE_SHUTDOWN; model memory is freed. */
    shutdown(): void;
    [Symbol.asyncDispose](): Promise<void>;
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
