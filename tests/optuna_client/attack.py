"""Malformed and out-of-scope calls to Trainyard's Optuna storage endpoint, through Optuna's
own generated stubs: each must get a clean gRPC status (never INTERNAL or a dropped
connection), and the endpoint must still serve afterwards.

    python attack.py HOST PORT

Prints one JSON line: {call: status code name}.
"""
import json
import sys

import grpc
from optuna.storages._grpc.auto_generated import api_pb2 as pb
from optuna.storages._grpc.auto_generated import api_pb2_grpc as rpc

host, port = sys.argv[1], sys.argv[2]
stub = rpc.StorageServiceStub(grpc.insecure_channel(f"{host}:{port}"))
seen = {}


def call(name, method, request):
    try:
        method(request)
        seen[name] = "OK"
    except grpc.RpcError as e:
        seen[name] = e.code().name


study = stub.CreateNewStudy(pb.CreateNewStudyRequest(directions=[0], study_name="attacked")).study_id
trial = stub.CreateNewTrial(pb.CreateNewTrialRequest(study_id=study, template_trial_is_none=True)).trial_id
good = '{"name": "CategoricalDistribution", "attributes": {"choices": ["a", "b"]}}'
call("empty study name", stub.CreateNewStudy, pb.CreateNewStudyRequest(directions=[0], study_name=""))
call("huge study name", stub.CreateNewStudy, pb.CreateNewStudyRequest(directions=[0], study_name="x" * 600))
call("no directions", stub.CreateNewStudy, pb.CreateNewStudyRequest(study_name="nodir"))
call("unknown study", stub.GetStudyDirections, pb.GetStudyDirectionsRequest(study_id=987654))
call("unknown trial", stub.GetTrial, pb.GetTrialRequest(trial_id=987654))
call("distribution not JSON", stub.SetTrialParameter, pb.SetTrialParameterRequest(
    trial_id=trial, param_name="p", param_value_internal=0, distribution="{not json"))
call("unknown distribution", stub.SetTrialParameter, pb.SetTrialParameterRequest(
    trial_id=trial, param_name="p", param_value_internal=0, distribution='{"name": "Evil", "attributes": {}}'))
call("choice index out of range", stub.SetTrialParameter, pb.SetTrialParameterRequest(
    trial_id=trial, param_name="p", param_value_internal=99, distribution=good))
call("negative choice index", stub.SetTrialParameter, pb.SetTrialParameterRequest(
    trial_id=trial, param_name="p", param_value_internal=-1, distribution=good))
call("good parameter", stub.SetTrialParameter, pb.SetTrialParameterRequest(
    trial_id=trial, param_name="p", param_value_internal=1, distribution=good))
call("incompatible redeclaration", stub.SetTrialParameter, pb.SetTrialParameterRequest(
    trial_id=trial, param_name="p", param_value_internal=0,
    distribution='{"name": "FloatDistribution", "attributes": {"low": 0, "high": 1, "log": false, "step": null}}'))
call("unknown state", stub.SetTrialStateValues, pb.SetTrialStateValuesRequest(trial_id=trial, state=99))
call("template param without distribution", stub.CreateNewTrial, pb.CreateNewTrialRequest(
    study_id=study, template_trial=pb.Trial(state=1, params={"q": 1.0}), template_trial_is_none=False))
call("template with bad distribution", stub.CreateNewTrial, pb.CreateNewTrialRequest(
    study_id=study, template_trial=pb.Trial(state=1, params={"q": 1.0}, distributions={"q": "[]"}),
    template_trial_is_none=False))
call("too many included ids", stub.GetTrials, pb.GetTrialsRequest(
    study_id=study, included_trial_ids=list(range(30_001)), trial_id_greater_than=-1))
call("finish", stub.SetTrialStateValues, pb.SetTrialStateValuesRequest(trial_id=trial, state=1, values=[1.0]))
call("write to a finished trial", stub.SetTrialIntermediateValue, pb.SetTrialIntermediateValueRequest(
    trial_id=trial, step=1, intermediate_value=0.5))
call("claim a finished trial", stub.SetTrialStateValues, pb.SetTrialStateValuesRequest(trial_id=trial, state=0))
call("still serving", stub.GetAllStudies, pb.GetAllStudiesRequest())
print(json.dumps(seen))
