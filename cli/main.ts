// The `rekey` command: a table of subcommands, each in cli/commands/, and one place that turns
// errors into messages and exit codes. Every subcommand validates its input before touching anything.
import { ManifestError, secretJsonSchema } from '../lib/manifest';
import { TASK_QUEUE } from '../workflows/messages';
import { EXIT, UsageError, err, out } from './common';
import { decide } from './commands/approve';
import { approvals, approvalsServer } from './commands/approvals';
import { inventoryCommand } from './commands/inventory';
import { applyCommand, planCommand, scheduleCommand } from './commands/schedules';
import { audit } from './commands/audit';
import { codecKey } from './commands/codec-key';
import { codecServer } from './commands/codec-server';
import { pending } from './commands/pending';
import { revoke } from './commands/revoke';
import { rotate } from './commands/rotate';
import { status } from './commands/status';
import { validate } from './commands/validate';

const HELP = `rekey: durable, zero-downtime secret rotation on Temporal

usage:
  rekey rotate NAME -f DIR [--key PATH [--agent]] [--reason TEXT] [--as LABEL] [--wait]
                              rotate the Secret NAME as declared under DIR; prints its spec hash,
                              which the workers' own manifests must match. --key signs the request
                              (you then cannot approve it yourself)
  rekey rotate --all | --selector team=payments -f DIR [--max-parallel N]
                              rotate many secrets as one fleet; one summary at the end
  rekey rotate --group NAME -f DIR [--reason TEXT] [--as LABEL] [--wait]
                              rotate every Secret of the RotationGroup NAME or none: all are
                              prepared and verified, one decision, then all promote
  rekey plan -f DIR [--set NAME]
                              what apply would change in Temporal's Schedules (changes nothing),
                              and the spec hash of every secret
  rekey apply -f DIR [--set NAME]
                              create, update and prune the Schedules of this manifest set
  rekey schedule pause|unpause|trigger|describe NAME [--note TEXT]
  rekey inventory -f DIR [--json]
                              every secret: owner, class, store, consumers, age against maxAge
                              (OVERDUE marked), next scheduled rotation, last outcome
  rekey status NAME           show the latest rotation of NAME: stage, consumers, outcome
  rekey pending [--json]      list rotations and groups waiting for an approval decision
  rekey approve NAME --key PATH [--agent] [--comment TEXT] [--expires 1h] [-f DIR] [--print]
  rekey reject NAME --key PATH [--agent] [--comment TEXT] [--expires 1h] [-f DIR] [--print]
  rekey approve|reject --group NAME --key PATH [...]
                              the same, once for a whole RotationGroup (bound to every member's
                              pending version)
                              sign a decision for the run waiting now (its run, pending version
                              and spec) with your SSH key (ssh-keygen -Y sign -n rekey) and send
                              it; --print prints it for the Temporal UI's signal form instead;
                              -f DIR refuses to sign unless the rotation runs the spec DIR says
  rekey approvals enroll --as NAME -f DIR [--expires 15m] [--data DIR]
                              print a one-time link that enrols a passkey for NAME on the
                              approvals server; the key it prints counts only once added to
                              the reviewed manifests (Settings people[].passkeys)
  rekey approvals-server -f DIR [--host 127.0.0.1] [--port PORT] [--data DIR] [--poll 10s]
                              serve the phone page: runs waiting for a decision, approved or
                              rejected with a passkey (relying party: Settings spec.passkeys)
  rekey revoke NAME --emergency --reason TEXT --key PATH [--agent] [-f DIR] [--revoke-first]
                              a leaked secret: rotate now on a break-glass signature, no approval,
                              no overlap, superseding any rotation in flight; prints the time until
                              the old credential was rejected
  rekey audit [NAME] [--json] [--database URL | --log PATH]
                              who rotated what, when, why, who approved (signed), which versions
  rekey audit verify [--public-key PATH]... [-f DIR] [--offline] [--database URL | --log PATH]
                              check signatures, the chain, each signed decision, and that the trail
                              reaches every head rotations recorded; exit 5 naming the first problem,
                              6 if no rotation's head could vouch for the trail's end
  rekey audit keygen --out PATH
                              make an Ed25519 audit signing key (PATH) and its public half (PATH.pub)
  rekey audit init --database ADMIN_URL [--password-file F] --writer ROLE
                              create the audit table; ROLE may only INSERT and SELECT
  rekey codec-server [--port 8388] [--origin UI_URL]
                              decode encrypted payloads for the Temporal UI and CLI (bearer token)
  rekey codec-key new [--id ID] [--keyring PATH]
                              add a payload-encryption key and make it active
  rekey validate -f DIR       check every manifest under DIR; list secrets with their spec hashes
  rekey schema                print the JSON Schema of Secret manifests (for editors)
  rekey help                  this text

Temporal is reached through TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE, TEMPORAL_API_KEY and
TEMPORAL_TLS_* (or a TEMPORAL_PROFILE); the task queue is REKEY_TASK_QUEUE (default "${TASK_QUEUE}").
The audit trail: REKEY_AUDIT_DATABASE_URL (+ REKEY_AUDIT_DATABASE_PASSWORD_FILE) or REKEY_AUDIT_LOG,
signed with REKEY_AUDIT_KEY, verified with REKEY_AUDIT_PUBLIC_KEY.
Exit status: 0 done, 1 rolled back or refused, 2 bad input, 3 already rotating, 4 Temporal
unreachable, 5 audit trail tampered, 6 audit trail's end unverifiable.`;

const COMMANDS: Record<string, (args: string[]) => Promise<number>> = {
  rotate,
  approve: decide(true),
  reject: decide(false),
  pending,
  approvals,
  'approvals-server': approvalsServer,
  revoke,
  audit,
  plan: planCommand,
  apply: applyCommand,
  schedule: scheduleCommand,
  inventory: inventoryCommand,
  'codec-server': codecServer,
  'codec-key': codecKey,
  status,
  validate,
  schema: async () => {
    out(JSON.stringify(secretJsonSchema(), null, 2));
    return EXIT.ok;
  },
};

export async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  try {
    if (command === undefined || ['help', '--help', '-h'].includes(command)) {
      out(HELP);
      return command === undefined ? EXIT.usage : EXIT.ok;
    }
    const run = COMMANDS[command];
    if (!run) throw new UsageError(`unknown command "${command}"`);
    return await run(rest);
  } catch (e) {
    if (e instanceof ManifestError) {
      err('invalid manifests, nothing was started:');
      for (const issue of e.issues) err(`  ${issue.source}: ${issue.path ? `${issue.path}: ` : ''}${issue.message}`);
      return EXIT.usage;
    }
    if (e instanceof UsageError) {
      err(`rekey: ${e.message}\nrun "rekey help" for usage`);
      return EXIT.usage;
    }
    if (e instanceof Error && e.message.startsWith('cannot reach Temporal')) {
      err(`rekey: ${e.message}`);
      return EXIT.unavailable;
    }
    throw e;
  }
}

if (require.main === module) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (e) => {
      err(`rekey: ${e instanceof Error ? e.message : String(e)}`);
      process.exit(1);
    },
  );
}
