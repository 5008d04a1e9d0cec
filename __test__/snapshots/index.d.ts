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
    pageSize?: number;
    disableRadixCache?: boolean;
    randomSeed?: number;
    skipTokenizerInit?: boolean;
    logLevel?: string;
    enableReturnHiddenStates?: boolean;
    cudaGraphMaxBs?: number;
    disableCudaGraph?: boolean;
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
    jsonSchema?: string;
    regex?: string;
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
}
export interface GenerateOutput {
    text: string;
    outputIds: number[];
    metaInfo: MetaInfo & {
        finishReason: FinishReason;
    };
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
export interface GenerateOptions {
    signal?: AbortSignal;
    rid?: string | string[];
}
export type Prompt = string | string[] | {
    inputIds: number[] | number[][];
};
export declare class RadixLMError extends Error {
    readonly code: string;
    constructor(code: string, message: string);
}
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
    tokenize(text: string): number[];
    detokenize(ids: number[], options?: {
        skipSpecialTokens?: boolean;
    }): string;
    /** Resolved options, KV pool state and counters. */
    getServerInfo(): Record<string, unknown>;
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
