// Methods of the contract this server does not serve yet: each answers Unimplemented with a
// message naming the method and its capability, so clients can be written against the whole
// contract now.
import type { DescService } from "@bufbuild/protobuf";
import type { ConnectRouter } from "@connectrpc/connect";
import { notImplemented } from "../core/errors.js";

export function unimplementedMethods(service: DescService, capability: string): Record<string, () => never> {
  const impl: Record<string, () => never> = {};
  for (const method of service.methods) {
    impl[method.localName] = () => {
      throw notImplemented(`${service.name}.${method.name} (${capability})`);
    };
  }
  return impl;
}

export function registerUnimplemented(router: ConnectRouter, service: DescService, capability: string): void {
  router.service(service, unimplementedMethods(service, capability) as never);
}
