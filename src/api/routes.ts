// Every service the server answers, in one place. Services that a later issue implements are
// registered as Unimplemented so the whole contract is reachable (and reflectable) today.
import type { DescFile, DescMethod } from "@bufbuild/protobuf";
import type { ConnectRouter, MethodImpl } from "@connectrpc/connect";
import { AuthService, file_foreman_v1_auth } from "../../gen/foreman/v1/auth_pb.js";
import { file_foreman_v1_common } from "../../gen/foreman/v1/common_pb.js";
import { file_foreman_v1_repository, RepositoryService } from "../../gen/foreman/v1/repository_pb.js";
import { file_foreman_v1_secrets, SecretsService } from "../../gen/foreman/v1/secrets_pb.js";
import { file_foreman_v1_session, SessionService } from "../../gen/foreman/v1/session_pb.js";
import { file_foreman_v1_task, TaskService } from "../../gen/foreman/v1/task_pb.js";
import { file_foreman_v1_todo, TodoService } from "../../gen/foreman/v1/todo_pb.js";
import { file_foreman_v1_worker, WorkerService } from "../../gen/foreman/v1/worker_pb.js";
import { file_foreman_v1_workspace, WorkspaceService } from "../../gen/foreman/v1/workspace_pb.js";
import type { Core } from "../core/context.js";
import { authService } from "./auth-service.js";
import { registerHealthService, type HealthStatus } from "./health-service.js";
import { registerReflectionService } from "./reflection-service.js";
import { repositoryService } from "./repository-service.js";
import { secretsService } from "./secrets-service.js";
import { sessionService } from "./session-service.js";
import { todoService } from "./todo-service.js";
import { taskService } from "./task-service.js";
import { workerService } from "./worker-service.js";
import { workspaceService } from "./workspace-service.js";

export const FOREMAN_FILES: DescFile[] = [
  file_foreman_v1_common,
  file_foreman_v1_workspace,
  file_foreman_v1_repository,
  file_foreman_v1_task,
  file_foreman_v1_session,
  file_foreman_v1_todo,
  file_foreman_v1_secrets,
  file_foreman_v1_worker,
  file_foreman_v1_auth,
];

export function registerRoutes(router: ConnectRouter, core: Core, health: HealthStatus): void {
  router.service(WorkspaceService, workspaceService(core));
  router.service(RepositoryService, repositoryService(core));
  router.service(TaskService, taskService(core));
  router.service(TodoService, todoService(core));
  // StreamLog fans one batch out to every reader of a session, and connect-node compresses per
  // stream: gzip would encode each batch again for every reader (../shared/STACK.md measured
  // twice the CPU and 170 MB more memory for 10 KB batches to 1,000 readers), so its messages
  // go uncompressed. The other calls answer one client each and keep gzip.
  const sessions = sessionService(core);
  for (const method of SessionService.methods) {
    const impl = (sessions as unknown as Record<string, MethodImpl<DescMethod>>)[method.localName]!;
    router.rpc(method as DescMethod, impl, method === SessionService.method.streamLog ? { compressMinBytes: Number.MAX_SAFE_INTEGER } : {});
  }
  router.service(SecretsService, secretsService(core));
  router.service(WorkerService, workerService(core));
  router.service(AuthService, authService(core));
  registerHealthService(router, health);
  registerReflectionService(router, FOREMAN_FILES);
}
