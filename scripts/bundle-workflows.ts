// `npm run -s bundle-workflows [OUT]`: the workflow bundle a worker loads with REKEY_WORKFLOW_BUNDLE
// instead of running webpack at every start. Prints the path it wrote.
import { writeFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { bundleWorkflowCode } from '@temporalio/worker';

export async function bundleWorkflows(out: string): Promise<string> {
  const { code } = await bundleWorkflowCode({ workflowsPath: require.resolve('../workflows'), logger: undefined });
  await writeFile(out, code);
  return out;
}

if (require.main === module) {
  bundleWorkflows(resolve(process.argv[2] ?? 'workflow-bundle.js')).then(
    (path) => console.log(path),
    (err) => {
      console.error(`bundle-workflows: ${(err as Error).message}`);
      process.exit(1);
    },
  );
}
