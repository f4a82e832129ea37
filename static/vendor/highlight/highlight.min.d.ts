// Types for the part of highlight.js (common build, ES module) that Djinn uses.
// highlight.js's own typings describe the npm package, not this CDN build, so this file is written by hand.
export interface HLJSApi {
  highlightElement(element: HTMLElement): void;
  getLanguage(name: string): object | undefined;
  configure(options: { ignoreUnescapedHTML?: boolean; throwUnescapedHTML?: boolean; cssSelector?: string }): void;
}
declare const hljs: HLJSApi;
export default hljs;
