// Offline check of the package source, with the library the Salesforce CLI itself uses for
// `sf project convert source` (@salesforce/source-deploy-retrieve): every file must resolve to
// a known metadata type in its folder, the package must hold exactly the components below and
// never the global OAuth settings (the consumer key and secret stay in the Dev Hub), and the
// source must convert to the Metadata API format `sf package version create` uploads.
import { mkdtempSync, rmSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ComponentSet, MetadataConverter } from '@salesforce/source-deploy-retrieve';

const project = join(dirname(fileURLToPath(import.meta.url)), '..');
const settings = JSON.parse(readFileSync(join(project, 'sfdx-project.json'), 'utf8'));
const packaged = settings.packageDirectories.filter((d) => d.package);
const problems = [];
if (packaged.length !== 1) problems.push('sfdx-project.json must name exactly one package directory');

const expected = [
  'ExternalClientApplication:PQL_Engine',
  'ExtlClntAppOauthSettings:PQL_Engine_oauth',
  'ExtlClntAppOauthConfigurablePolicies:PQL_Engine_oauthPlcy',
  'ExtlClntAppConfigurablePolicies:PQL_Engine_plcy',
  'PermissionSet:PQL_Engine_Integration',
];

const set = ComponentSet.fromSource(join(project, packaged[0].path));
const found = set
  .getSourceComponents()
  .toArray()
  .map((c) => `${c.type.name}:${c.fullName}`)
  .sort();
for (const name of expected) {
  if (!found.includes(name)) problems.push(`missing from the package: ${name}`);
}
for (const name of found) {
  if (!expected.includes(name)) problems.push(`not expected in the package: ${name}`);
}

const out = mkdtempSync(join(tmpdir(), 'pql-sfdx-'));
try {
  const result = await new MetadataConverter().convert(set, 'metadata', {
    type: 'directory',
    outputDirectory: out,
    genUniqueDir: false,
  });
  const manifest = readFileSync(join(result.packagePath, 'package.xml'), 'utf8');
  for (const name of expected) {
    const [type, member] = name.split(':');
    if (!manifest.includes(`<members>${member}</members>`) || !manifest.includes(`<name>${type}</name>`)) {
      problems.push(`package.xml does not list ${name}`);
    }
  }
  if (manifest.includes('ExtlClntAppGlobalOauthSettings')) {
    problems.push('the global OAuth settings must never be packaged');
  }
} finally {
  rmSync(out, { recursive: true, force: true });
}

if (problems.length) {
  for (const p of problems) console.error(`salesforce/: ${p}`);
  process.exit(1);
}
console.log(`salesforce/: ${found.length} components resolve and convert: ${found.join(', ')}`);
