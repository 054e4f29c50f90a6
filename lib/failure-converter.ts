// Loaded by path into the workflow sandbox and by clients: failure messages and stack traces travel
// as an encoded payload, so the payload codec encrypts them too.
import { DefaultFailureConverter } from '@temporalio/common';

export const failureConverter = new DefaultFailureConverter({ encodeCommonAttributes: true });
