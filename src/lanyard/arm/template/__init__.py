"""ARM's template language: expressions, functions, and the deployment plan they drive."""

from lanyard.arm.template.engine import DeploymentScope, Plan, PlannedResource, Resolver, outputs, plan, render
from lanyard.arm.template.expressions import TemplateError

__all__ = ["DeploymentScope", "Plan", "PlannedResource", "Resolver", "TemplateError", "outputs", "plan", "render"]
