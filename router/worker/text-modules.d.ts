// Files the Worker bundles as text (wrangler.toml `[[rules]]` type "Text"): their contents, not code.
declare module 'swagger-ui-dist/swagger-ui-bundle.js' {
  const text: string;
  export default text;
}
declare module 'swagger-ui-dist/swagger-ui.css' {
  const text: string;
  export default text;
}
