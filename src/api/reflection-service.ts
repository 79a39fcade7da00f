import { create, fromBinary, toBinary, type DescFile, type MessageInitShape } from "@bufbuild/protobuf";
import { nestedTypes } from "@bufbuild/protobuf/reflect";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import type { ConnectRouter } from "@connectrpc/connect";
import {
  ServerReflection,
  ServerReflectionRequestSchema,
  ServerReflectionResponseSchema,
  file_grpc_reflection_v1_reflection,
  type ServerReflectionRequest,
} from "../../gen/grpc/reflection/v1/reflection_pb.js";
import {
  ServerReflection as ServerReflectionV1Alpha,
  ServerReflectionRequestSchema as V1AlphaRequestSchema,
  ServerReflectionResponseSchema as V1AlphaResponseSchema,
  file_grpc_reflection_v1alpha_reflection,
} from "../../gen/grpc/reflection/v1alpha/reflection_pb.js";
import { file_health_v1_health } from "../../gen/health/v1/health_pb.js";

// gRPC status codes, carried in ErrorResponse.error_code.
const INVALID_ARGUMENT = 3;
const NOT_FOUND = 5;

interface ReflectionIndex {
  services: string[];
  /** proto file name -> serialized FileDescriptorProto of the file and its transitive dependencies */
  files: Map<string, Uint8Array[]>;
  /** fully-qualified symbol -> proto file name */
  symbols: Map<string, string>;
  /** `${extendee}:${number}` -> proto file name */
  extensions: Map<string, string>;
  /** extendee -> extension numbers */
  extensionNumbers: Map<string, number[]>;
  messages: Set<string>;
}

function collectFiles(roots: DescFile[]): Map<string, DescFile> {
  const all = new Map<string, DescFile>();
  const visit = (file: DescFile) => {
    if (all.has(file.proto.name)) {
      return;
    }
    all.set(file.proto.name, file);
    file.dependencies.forEach(visit);
  };
  roots.forEach(visit);
  return all;
}

function buildIndex(served: DescFile[]): ReflectionIndex {
  const roots = [...served, file_health_v1_health, file_grpc_reflection_v1_reflection, file_grpc_reflection_v1alpha_reflection];
  const all = collectFiles(roots);
  const services = new Set<string>();
  for (const file of roots) {
    for (const service of file.services) {
      services.add(service.typeName);
    }
  }

  const serialized = new Map<string, Uint8Array>();
  for (const [name, file] of all) {
    serialized.set(name, toBinary(FileDescriptorProtoSchema, file.proto));
  }
  const files = new Map<string, Uint8Array[]>();
  for (const [name, file] of all) {
    // The requested file comes first, then everything it imports.
    const closure = [...collectFiles([file]).keys()];
    files.set(
      name,
      closure.map((n) => serialized.get(n) ?? new Uint8Array()),
    );
  }

  const symbols = new Map<string, string>();
  const extensions = new Map<string, string>();
  const extensionNumbers = new Map<string, number[]>();
  const messages = new Set<string>();
  for (const [name, file] of all) {
    const add = (symbol: string) => {
      if (!symbols.has(symbol)) {
        symbols.set(symbol, name);
      }
    };
    for (const type of nestedTypes(file)) {
      add(type.typeName);
      switch (type.kind) {
        case "message":
          messages.add(type.typeName);
          type.fields.forEach((f) => add(`${type.typeName}.${f.name}`));
          type.oneofs.forEach((o) => add(`${type.typeName}.${o.name}`));
          break;
        case "enum": {
          // Enum values are scoped to the enum's parent, not the enum itself.
          const dot = type.typeName.lastIndexOf(".");
          const scope = dot < 0 ? "" : type.typeName.slice(0, dot + 1);
          type.values.forEach((v) => add(scope + v.name));
          break;
        }
        case "service":
          type.methods.forEach((m) => add(`${type.typeName}.${m.name}`));
          break;
        case "extension": {
          const extendee = type.extendee.typeName;
          extensions.set(`${extendee}:${type.number}`, name);
          extensionNumbers.set(extendee, [...(extensionNumbers.get(extendee) ?? []), type.number]);
          break;
        }
      }
    }
  }
  return { services: [...services], files, symbols, extensions, extensionNumbers, messages };
}

type MessageResponse = NonNullable<MessageInitShape<typeof ServerReflectionResponseSchema>["messageResponse"]>;

function notFound(message: string): MessageResponse {
  return { case: "errorResponse", value: { errorCode: NOT_FOUND, errorMessage: message } };
}

function fileResponse(index: ReflectionIndex, fileName: string | undefined): MessageResponse | undefined {
  const protos = fileName === undefined ? undefined : index.files.get(fileName);
  if (!protos) {
    return undefined;
  }
  return { case: "fileDescriptorResponse", value: { fileDescriptorProto: protos } };
}

function answer(index: ReflectionIndex, req: ServerReflectionRequest): MessageResponse {
  const request = req.messageRequest;
  switch (request.case) {
    case "listServices":
      return {
        case: "listServicesResponse",
        value: { service: index.services.map((name) => ({ name })) },
      };
    case "fileByFilename":
      return fileResponse(index, request.value) ?? notFound(`file not found: ${request.value}`);
    case "fileContainingSymbol":
      return (
        fileResponse(index, index.symbols.get(request.value)) ?? notFound(`symbol not found: ${request.value}`)
      );
    case "fileContainingExtension": {
      const { containingType, extensionNumber } = request.value;
      return (
        fileResponse(index, index.extensions.get(`${containingType}:${extensionNumber}`)) ??
        notFound(`extension not found: ${containingType} ${extensionNumber}`)
      );
    }
    case "allExtensionNumbersOfType":
      if (!index.messages.has(request.value)) {
        return notFound(`message type not found: ${request.value}`);
      }
      // A known message without extensions gets an empty list, as grpc-go does.
      return {
        case: "allExtensionNumbersResponse",
        value: { baseTypeName: request.value, extensionNumber: index.extensionNumbers.get(request.value) ?? [] },
      };
    case undefined:
      return { case: "errorResponse", value: { errorCode: INVALID_ARGUMENT, errorMessage: "empty message_request" } };
  }
}

function respond(index: ReflectionIndex, req: ServerReflectionRequest) {
  return create(ServerReflectionResponseSchema, { validHost: req.host, originalRequest: req, messageResponse: answer(index, req) });
}

/**
 * grpc.reflection.v1.ServerReflection for the services in `files`, plus the
 * health and reflection services themselves, and the same under v1alpha for
 * older tools (grpcurl, grpcui). Lookups that fail are answered in-band with
 * an error_response, so the stream stays usable.
 */
export function registerReflectionService(router: ConnectRouter, files: DescFile[]): void {
  const index = buildIndex(files);
  router.service(ServerReflection, {
    async *serverReflectionInfo(requests) {
      for await (const req of requests) yield respond(index, req);
    },
  });
  router.service(ServerReflectionV1Alpha, {
    async *serverReflectionInfo(requests) {
      // v1alpha's messages are v1's under another package, the same on the wire.
      for await (const req of requests) {
        const answered = respond(index, fromBinary(ServerReflectionRequestSchema, toBinary(V1AlphaRequestSchema, req)));
        yield fromBinary(V1AlphaResponseSchema, toBinary(ServerReflectionResponseSchema, answered));
      }
    },
  });
}
