// A node-postgres client that authenticates only with SCRAM: it never answers a server asking for
// the password in clear text or as md5 (either can be captured or replayed), and it refuses a
// server that let it in without a password exchange at all (trust, or an impostor), because then
// "the credential works" would prove nothing. node-postgres answers those requests itself, so the
// handlers are replaced on the instance before it connects (pinned pg version; tested).
import { Client, type ClientConfig } from 'pg';

type Internals = {
  connection: { emit(event: string, err: Error): void };
  _handleAuthSASLFinal(msg: unknown): void;
};

export class ScramOnlyClient extends Client {
  private scramDone = false;

  private readonly where: string;

  constructor(config: ClientConfig = {}, where?: string) {
    super(config);
    this.where = where ?? `${config.host ?? 'postgres'}:${config.port ?? 5432}`;
    const self = this as unknown as Internals;
    const refuse = (how: string) => () => self.connection.emit('error', new Error(`${this.where} asked for the password ${how}; rekey only authenticates with SCRAM`));
    const finalSasl = self._handleAuthSASLFinal.bind(this);
    Object.assign(this, {
      _handleAuthCleartextPassword: refuse('in clear text'),
      _handleAuthMD5Password: refuse('as md5'),
      _handleAuthSASLFinal: (msg: unknown) => {
        this.scramDone = true;
        finalSasl(msg);
      },
    });
  }

  // Both forms: Promise for callers, callback for pg's Pool.
  override connect(): Promise<Client>;
  override connect(callback: (err: Error) => void): void;
  override connect(callback?: (err: Error) => void): Promise<Client> | void {
    const checked = super.connect().then(async () => {
      if (this.scramDone) return this as Client;
      await this.end().catch(() => undefined);
      throw new Error(`${this.where} let rekey in without a SCRAM password exchange (trust, or not the real server); refusing it`);
    });
    if (!callback) return checked;
    checked.then(
      () => (callback as (err: Error | null) => void)(null),
      (err) => callback(err),
    );
  }
}
