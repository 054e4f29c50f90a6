import { userInfo } from 'node:os';
import { WorkflowNotFoundError, WorkflowUpdateFailedError } from '@temporalio/client';
import { connectClient } from '../../lib/temporal';
import { decideUpdate, rotationWorkflowId } from '../../workflows/messages';
import { EXIT, err, out, parse } from '../common';

/** `rekey approve|reject NAME [--as USER] [--comment TEXT]`: the checked update, never a blind signal. */
export function decide(approve: boolean) {
  return async (args: string[]): Promise<number> => {
    const { values, positionals } = parse(args, { as: { type: 'string' }, comment: { type: 'string' } }, ['NAME']);
    const [name] = positionals;
    const approver = (values.as as string | undefined) ?? process.env.REKEY_USER ?? userInfo().username;
    const client = await connectClient();
    const handle = client.workflow.getHandle(rotationWorkflowId(name));
    try {
      const result = await handle.executeUpdate(decideUpdate, {
        args: [{ approver, approve, comment: values.comment as string | undefined }],
      });
      const verb = approve ? 'approved' : 'rejected';
      if (result.outcome === 'waiting') out(`${verb} by ${approver}: ${result.approvals} of ${result.needed} approvals, still waiting`);
      else if (result.outcome === 'approved') out(`${verb} by ${approver}: ${result.approvals} of ${result.needed} approvals, the rotation of ${name} proceeds to promote`);
      else out(`${verb} by ${approver}: the rotation of ${name} rolls back`);
      return EXIT.ok;
    } catch (e) {
      if (e instanceof WorkflowUpdateFailedError) {
        err(`refused: ${e.cause?.message ?? e.message}`);
        return EXIT.usage;
      }
      if (e instanceof WorkflowNotFoundError) {
        err(`no rotation of ${name} is running (workflow ${rotationWorkflowId(name)})`);
        return EXIT.usage;
      }
      throw e;
    }
  };
}
