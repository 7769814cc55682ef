// ESLint (flat config) for the console's script (console.js, beside it): `scripts/ui-test.sh`
// runs it from this folder, installing eslint into target/ui-tools when missing. No plugin or shared config is imported, so the
// config needs nothing beside eslint itself: the rules are listed here, and so are the browser
// globals the page may use (anything else is a `no-undef` error).
export default [
  {
    files: ["**/*.js"],
    languageOptions: {
      ecmaVersion: 2022,
      sourceType: "script",
      globals: {
        AbortController: "readonly",
        AbortSignal: "readonly",
        Node: "readonly",
        TextDecoderStream: "readonly",
        confirm: "readonly",
        crypto: "readonly",
        document: "readonly",
        fetch: "readonly",
        sessionStorage: "readonly",
        setInterval: "readonly",
        setTimeout: "readonly",
      },
    },
    linterOptions: { reportUnusedDisableDirectives: "error" },
    rules: {
      "no-undef": "error",
      "no-unused-vars": ["error", { args: "after-used" }],
      "no-implicit-globals": "error",
      "no-redeclare": "error",
      "no-shadow": "error",
      "no-var": "error",
      "prefer-const": "error",
      eqeqeq: ["error", "always"],
      curly: ["error", "all"],
      strict: ["error", "global"],
      "no-eval": "error",
      "no-implied-eval": "error",
      "no-new-func": "error",
      "no-unsafe-finally": "error",
      "no-unreachable": "error",
      "no-constant-condition": ["error", { checkLoops: false }],
      "no-dupe-keys": "error",
      "no-fallthrough": "error",
      "no-self-compare": "error",
      "no-throw-literal": "error",
      "no-unused-expressions": "error",
      "no-use-before-define": ["error", { functions: false }],
      "require-await": "error",
      "no-restricted-properties": [
        "error",
        { property: "innerHTML", message: "write text with textContent or el()" },
        { property: "outerHTML", message: "write text with textContent or el()" },
      ],
    },
  },
];
