// Everything the worker registers as a workflow.
export { rotateSecret } from './rotateSecret';
export { emergencyRevoke } from './emergencyRevoke';
export { rotateFleet } from './rotateFleet';
export { rotateGroup } from './rotateGroup';
export { retireCredential } from './retireCredential';
