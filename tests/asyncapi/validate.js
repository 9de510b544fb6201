// Parse an AsyncAPI document with the official parser (@asyncapi/parser) and print its diagnostics as JSON.
const fs = require('fs');
const { Parser } = require('@asyncapi/parser');

(async () => {
  const parser = new Parser();
  const { document, diagnostics } = await parser.parse(fs.readFileSync(process.argv[2], 'utf8'));
  const describe = (d) => `${d.code}: ${d.message} at ${d.path.join('.')}`;
  console.log(JSON.stringify({
    parsed: document !== undefined,
    errors: diagnostics.filter((d) => d.severity === 0).map(describe),
    warnings: diagnostics.filter((d) => d.severity === 1).map(describe),
    channels: document ? document.channels().length : 0,
    operations: document ? document.operations().length : 0,
  }));
})();
