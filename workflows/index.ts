// Everything the worker registers as a workflow.
export { rotateSecret } from './rotateSecret';
